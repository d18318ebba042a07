//! The UDP socket: binding, quinn-udp batched I/O (GSO, GRO, recvmmsg) and address
//! normalisation for dual-stack sockets.

use std::io;
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use stoq_core::{Error, TransportConfig};
use tokio::io::Interest;
use tracing::{debug, warn};

/// Bytes reserved for each receive slot when GRO is on: the kernel coalesces at most
/// 64 KiB per GRO batch.
const GRO_SLOT: usize = 64 * 1024;

/// Receive slots per recvmmsg call with GRO on: 8 x 64 KiB holds about 350 datagrams of
/// 1452 bytes, more than one wake-up's worth on loopback, in 512 KiB per endpoint.
const GRO_SLOTS: usize = 8;

/// Upper bound for one GSO send: the kernel refuses UDP GSO batches above 64 KiB.
const MAX_GSO_BYTES: usize = 64 * 1024 - 64;

/// The endpoint's socket with quinn-udp's state.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// The bound address (with the real port).
    pub(crate) local: SocketAddr,
    /// Whether the socket is IPv6 and accepts IPv4-mapped peers.
    dual_stack: bool,
    gso: bool,
}

impl Socket {
    /// Binds as `cfg` says: dual-stack for `[::]`, buffer sizes, GSO/GRO on or off.
    /// Must run inside a tokio runtime.
    pub(crate) fn bind(addr: SocketAddr, cfg: &TransportConfig) -> Result<Socket, Error> {
        let ctx = |what: &str| format!("{what} UDP socket {addr}");
        // Dual-stack for `[::]` and the configured buffer sizes, as every backend binds.
        let std = stoq_core::socket::bind_udp(addr, cfg)?;
        // Where the OS refused dual-stack, dialling IPv4 is refused with InvalidAddress.
        let dual_stack = addr.is_ipv6() && !socket2::SockRef::from(&std).only_v6().unwrap_or(true);
        // quinn-udp sets the socket non-blocking and turns on GRO, PKTINFO and TOS/TCLASS
        // reception.
        let state =
            UdpSocketState::new((&std).into()).map_err(|e| Error::io(ctx("configuring"), e))?;
        if !cfg.gro {
            set_gro(&std, false).map_err(|e| Error::io(ctx("disabling GRO on"), e))?;
        }
        let local = std
            .local_addr()
            .map_err(|e| Error::io(ctx("reading the address of"), e))?;
        let io = tokio::net::UdpSocket::from_std(std)
            .map_err(|e| Error::io(ctx("registering with tokio"), e))?;
        debug!(
            %local,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "quiche endpoint socket bound"
        );
        Ok(Socket {
            io,
            state,
            local,
            dual_stack,
            gso: cfg.gso,
        })
    }

    /// How many datagrams of `segment` bytes one send may carry.
    pub(crate) fn max_segments(&self, segment: usize) -> usize {
        if !self.gso || segment == 0 {
            return 1;
        }
        self.state
            .max_gso_segments()
            .min(MAX_GSO_BYTES / segment)
            .max(1)
    }

    /// Whether `peer` can be reached from this socket.
    pub(crate) fn can_reach(&self, peer: SocketAddr) -> bool {
        match (self.local, peer) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) => true,
            (SocketAddr::V4(_), SocketAddr::V6(_)) => false,
            (SocketAddr::V6(_), SocketAddr::V6(_)) => true,
            (SocketAddr::V6(_), SocketAddr::V4(_)) => self.dual_stack,
        }
    }

    /// The address as quiche sees it: IPv4-mapped IPv6 addresses become IPv4, so a
    /// peer has one address whatever socket family carries it.
    pub(crate) fn normalise(addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => addr,
            },
            SocketAddr::V4(_) => addr,
        }
    }

    /// The address as the socket needs it (IPv4 peers of an IPv6 socket are mapped).
    fn wire(&self, addr: SocketAddr) -> SocketAddr {
        match (self.local, addr) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => addr,
        }
    }

    /// The receive buffer layout for this socket: `(slot size, slot count)`. With GRO a
    /// slot holds a batch of datagrams; without, one datagram of at most
    /// `max_udp_payload` bytes (the size this endpoint advertises; larger ones are
    /// truncated and then fail authentication).
    pub(crate) fn recv_layout(&self, cfg: &TransportConfig) -> (usize, usize) {
        if self.state.gro_segments() > 1 && cfg.gro {
            (GRO_SLOT, GRO_SLOTS.min(quinn_udp::BATCH_SIZE))
        } else {
            (
                usize::from(cfg.max_udp_payload).max(1500),
                quinn_udp::BATCH_SIZE,
            )
        }
    }

    /// Receives one batch (recvmmsg; with GRO each slot may hold several datagrams of
    /// `meta.stride` bytes) into `buf`, split into slots of `slot` bytes. `Ok(0)` when
    /// nothing is ready.
    pub(crate) fn try_recv(
        &self,
        buf: &mut [u8],
        slot: usize,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let mut slices: [io::IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
            std::array::from_fn(|_| io::IoSliceMut::new(&mut []));
        let n = meta.len().min(buf.len() / slot).min(slices.len());
        for (slot, chunk) in slices.iter_mut().zip(buf.chunks_mut(slot)).take(n) {
            *slot = io::IoSliceMut::new(chunk);
        }
        match self.io.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.io).into(), &mut slices[..n], &mut meta[..n])
        }) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Sends `contents` to `to`: one datagram, or with `segment` several datagrams of
    /// `segment` bytes (the last may be shorter) in one GSO send. Waits while the socket
    /// buffer is full. Errors other than "would block" are logged by quinn-udp and the
    /// datagrams dropped, as UDP loss is recovered by QUIC anyway.
    pub(crate) async fn send(&self, contents: &[u8], to: SocketAddr, segment: Option<usize>) {
        let transmit = Transmit {
            destination: self.wire(to),
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        loop {
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.send((&self.io).into(), &transmit)
            }) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.io.writable().await {
                        warn!(error = %e, "UDP socket failed while waiting to send");
                        return;
                    }
                }
                Err(e) => {
                    debug!(error = %e, %to, "UDP send failed");
                    return;
                }
            }
        }
    }

    /// Sends one datagram if the socket can take it now (version negotiation and other
    /// stateless answers: dropping one under load is harmless).
    pub(crate) fn try_send_now(&self, contents: &[u8], to: SocketAddr) {
        let transmit = Transmit {
            destination: self.wire(to),
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        let _ = self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), &transmit)
        });
    }
}

/// Turns UDP generic receive offload on or off (quinn-udp always turns it on).
fn set_gro(socket: &std::net::UdpSocket, on: bool) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGroSegment, &on)
            .map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (socket, on);
        Ok(())
    }
}
