//! # STOQ on io_uring
//!
//! A [`Backend`] whose QUIC protocol engine is quinn-proto (sans-IO), driven by this
//! crate's own endpoint task (or by quinn 0.11's async glue, see "Two engines"), and whose
//! UDP I/O goes through **io_uring only**: no `sendmsg`/`recvmsg`
//! system call is ever made on the socket. Two rings per endpoint (receive, send), created
//! at bind.
//!
//! How QUIC's datagram I/O maps to io_uring (details in [`socket`]):
//!
//! | QUIC endpoint needs | io_uring mechanism |
//! |---|---|
//! | receive datagrams | one multishot `IORING_OP_RECVMSG`, kept armed from the endpoint's first poll on (so the kernel runs its completion work on the thread that drives the endpoint), into a provided-buffer ring registered once (`IORING_REGISTER_PBUF_RING`; buffers from one allocation made at bind) |
//! | receive batches | UDP GRO on the socket; the `UDP_GRO` control message gives the segment size quinn splits at |
//! | send datagrams | `IORING_OP_SENDMSG` from a fixed pool of send slots allocated at bind; `UDP_SEGMENT` control message for GSO |
//! | few system calls | sends are queued as SQEs on a send ring without entering the kernel; the direct engine's endpoint task submits every send of its turn (all connections) with one `io_uring_enter` (the glue engine: a flusher task, deferred until its worker has nothing else to run); receives need no system call at all (completions are read from shared memory) |
//! | wake-ups, timers | the receive ring's fd is registered with tokio's reactor, so receive completions wake the endpoint task like any socket would; send completions wake nobody (the send ring is not watched); timers are tokio's |
//! | an I/O thread on its own core | optional `IORING_SETUP_SQPOLL` on the send ring, with the kernel's submission thread pinned to a CPU ([`UringOptions::sqpoll`]) |
//!
//! The handles are ordinary STOQ handles and work from any tokio code. When io_uring
//! cannot be used (kernel too old, disabled by `kernel.io_uring_disabled`, blocked by
//! seccomp or an LSM), [`bind`] fails with an error that says why ([`Unavailable`]);
//! nothing falls back to plain sockets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stoq_core::Error> {
//! use stoq_core::{Backend, EndpointSpec, TransportConfig};
//! let tls = stoq_crypto::ephemeral_material(&["localhost"])?;
//! let server = stoq_uring::UringBackend.bind(EndpointSpec::server(
//!     "[::1]:0".parse().unwrap(), TransportConfig::default(), tls.clone()))?;
//! let client = stoq_uring::UringBackend.bind(EndpointSpec::client(
//!     server.local_addr()?, TransportConfig::default(), tls))?;
//! let conn = client.connect(server.local_addr()?, "localhost").await?;
//! # Ok(()) }
//! ```
//!
//! ## Two engines
//!
//! [`UringOptions::engine`] picks what drives quinn-proto over the rings:
//! * [`UringEngine::Direct`] (the default): this crate drives quinn-proto itself, with
//!   one task per endpoint (`direct.rs`). quinn-proto writes each transmit straight into
//!   a buffer of the send pool, which the `SendMsg` reads, and each receive is copied
//!   once, out of the ring into the `BytesMut` quinn-proto takes (quinn copies once too,
//!   out of its own buffer). Every send of a driver turn goes in one `io_uring_enter`.
//! * [`UringEngine::QuinnGlue`] (`phoenix --backend uring-glue`): quinn's own async glue on
//!   [`UringSocket`]. Its socket trait lends quinn's buffers, so each datagram is copied
//!   once more than quinn-udp copies it: into a send slot (the kernel reads it after
//!   `try_send` returns) and out of the provided-buffer ring; a flusher task batches the
//!   submissions of all connections.
//!
//! Both pass the whole conformance suite. On 1 GiB uploads here the direct engine moved
//! more and made fewer system calls than the glue on every shape measured
//! (`benches/results/syscalls.md`).
//!
//! ## Why this backend depends on another backend
//!
//! STOQ's architecture sketch has backends know only `stoq-core` and `stoq-crypto`. This
//! one also depends on `stoq-quinn`, because its protocol engine is quinn-proto too. The
//! direct engine reuses `stoq-quinn`'s quinn-proto configuration
//! ([`stoq_quinn::quinn_configs`]: transport settings, TLS, controllers), its error
//! mapping ([`stoq_quinn::errors`]) and its pacer for STOQ controllers
//! ([`stoq_quinn::pacing::ConnectionPacer`]), so both engines build the same connections
//! and report the same errors. The glue engine runs quinn's async glue on a custom socket
//! ([`quinn::Endpoint::new_with_abstract_socket`]), so `stoq-quinn`'s connection, stream
//! and congestion adapters apply unchanged
//! ([`stoq_quinn::QuinnTransport::bind_with_socket`]). Copying any of it would give two
//! copies to keep in step for no behavioural difference.
//!
//! ## Choices
//!
//! * Zero-copy send (`IORING_OP_SEND_ZC`) is not used: on loopback the kernel copies
//!   anyway (shared/FACTS.md measured no gain), and each zero-copy send costs a second
//!   completion. The glue engine copies sends into the slot pool (the copy quinn-udp's
//!   `sendmsg` makes in the kernel happens here in user space instead); the direct engine
//!   sends from the buffer quinn-proto wrote.
//! * Options quinn-udp sets on its sockets are set the same way (it configures the socket:
//!   GRO, ECN and destination-address reporting, `IP_PMTUDISC_PROBE`/`IPV6_DONTFRAG`),
//!   and its GSO/GRO probes decide the segment counts; its `sendmsg`/`recvmsg` are never
//!   called.
//! * `gro = false` is refused as for quinn: quinn-udp's set-up turns GRO on.
//! * Requires Linux 6.0 (multishot recvmsg); older kernels get
//!   [`Unavailable::KernelTooOld`].
#![warn(missing_docs)]

mod cmsg;
mod direct;
pub mod socket;
mod unavailable;

use std::sync::Arc;
use std::time::Duration;

use stoq_core::{Backend, Capabilities, EndpointSpec, Error, Transport};
use stoq_quinn::{EngineIdentity, QuinnTransport};

pub use socket::UringSocket;
pub use unavailable::Unavailable;

/// The backend's name.
pub const NAME: &str = "uring";

/// What io_uring endpoints can do through STOQ: everything the quinn engine can (the
/// protocol engine and its adapters are quinn's), GSO and GRO included.
pub const CAPABILITIES: Capabilities = stoq_quinn::CAPABILITIES;

/// Tuning of the io_uring engine. [`Default`] is what [`UringBackend`] uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringOptions {
    /// Let a kernel thread poll the send ring's submission queue (`IORING_SETUP_SQPOLL`):
    /// sends reach the kernel without any `io_uring_enter` while the thread is awake. Off by default:
    /// the thread spins for `idle` after each submission and takes a core's worth of CPU
    /// under load, which on a 2-core machine competes with QUIC's own work.
    pub sqpoll: Option<SqPoll>,
    /// Which code drives quinn-proto over the rings.
    pub engine: UringEngine,
}

/// What drives quinn-proto's state machine over the rings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UringEngine {
    /// This crate's own driver (one task per endpoint, the default): quinn-proto writes
    /// transmits straight into the send pool and receives are copied once, as quinn copies
    /// them.
    #[default]
    Direct,
    /// quinn's async glue on [`UringSocket`] (quinn's connection, stream and endpoint
    /// tasks): each datagram is copied once more than quinn copies it, into a send slot
    /// and out of the receive ring.
    QuinnGlue,
}

impl UringOptions {
    /// The options with `engine` set.
    pub fn with_engine(mut self, engine: UringEngine) -> Self {
        self.engine = engine;
        self
    }
}

/// Settings of the kernel's submission-queue polling thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqPoll {
    /// Pin the thread to this CPU (`sq_thread_cpu`); None leaves placement to the
    /// scheduler.
    pub cpu: Option<u32>,
    /// How long the thread polls without work before it sleeps (then the next
    /// submission wakes it with one `io_uring_enter`).
    pub idle: Duration,
}

impl Default for SqPoll {
    fn default() -> Self {
        SqPoll {
            cpu: None,
            idle: Duration::from_millis(2),
        }
    }
}

/// The io_uring engine with default options.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringBackend;

impl Backend for UringBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, Error> {
        bind(spec, &UringOptions::default())
    }
}

/// The io_uring engine with explicit [`UringOptions`].
#[derive(Debug, Clone, Default)]
pub struct TunedUringBackend(pub UringOptions);

impl Backend for TunedUringBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, Error> {
        bind(spec, &self.0)
    }
}

/// Binds an io_uring endpoint as `spec` says. Must be called within a tokio runtime.
///
/// Fails with [`Error::Io`] carrying an [`Unavailable`] (see [`Unavailable::find`]) when
/// io_uring cannot be used, with [`Error::Config`] for an invalid configuration, as the
/// other backends do.
pub fn bind(spec: EndpointSpec, options: &UringOptions) -> Result<Arc<dyn Transport>, Error> {
    match options.engine {
        UringEngine::Direct => Ok(Arc::new(direct::bind(spec, options)?)),
        UringEngine::QuinnGlue => Ok(Arc::new(QuinnTransport::bind_with_socket(
            spec,
            |addr, cfg| {
                let socket: Arc<dyn quinn::AsyncUdpSocket> = UringSocket::bind(addr, cfg, options)?;
                Ok(socket)
            },
            EngineIdentity {
                name: NAME,
                capabilities: CAPABILITIES,
            },
        )?)),
    }
}
