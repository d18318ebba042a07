//! Per-connection state fed by s2n-quic's event subscriber.
//!
//! s2n-quic has no `closed()` future, no stats snapshot and no post-handshake exporter or
//! peer-certificate API on its connection handle; it reports all of these as events
//! (`s2n_quic::provider::event`). STOQ's [`StoqSubscriber`] keeps one [`ConnShared`] per
//! connection as the subscriber's connection context; the STOQ connection handle fetches
//! it once with `query_event_context` and then reads it without touching s2n-quic's
//! connection lock. Counters are relaxed atomics (one add per UDP datagram).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s2n_quic::provider::event::{events, ConnectionInfo, ConnectionMeta, Subscriber};
use stoq_core::pki_types::CertificateDer;
use stoq_core::{ConnectionError, ConnectionStats};
use tokio::sync::Notify;

use crate::errors::connection_error;
use crate::exporter::{ExporterSecret, ExporterStore, PROBE_LABEL};

/// Locks a mutex, ignoring poisoning (the protected state stays consistent: every critical
/// section is a plain field update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Endpoint-wide counters and the exporter-secret store, shared with the subscriber.
#[derive(Debug, Default)]
pub(crate) struct EndpointShared {
    pub(crate) accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) exporter: ExporterStore,
}

/// What one connection's events told STOQ.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    rtt_nanos: AtomicU64,
    min_rtt_nanos: AtomicU64,
    cwnd: AtomicU64,
    bytes_in_flight: AtomicU64,
    udp_tx_datagrams: AtomicU64,
    udp_tx_bytes: AtomicU64,
    udp_rx_datagrams: AtomicU64,
    udp_rx_bytes: AtomicU64,
    lost_packets: AtomicU64,
    lost_bytes: AtomicU64,
    congestion_events: AtomicU64,
    /// Current maximum UDP payload of the active path (s2n-quic's "max datagram size").
    mtu: AtomicU64,
    handshake_complete: AtomicBool,
    close: Mutex<Option<ConnectionError>>,
    closed: Notify,
    /// Set when s2n-quic itself reported the close (after processing a local close too).
    engine_closed: AtomicBool,
    engine_closed_notify: Notify,
    exporter: Mutex<Option<ExporterSecret>>,
    peer_chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl ConnShared {
    /// Records why the connection ended (the first reason wins) and wakes `closed()`.
    pub(crate) fn set_closed(&self, reason: ConnectionError) {
        {
            let mut close = lock(&self.close);
            if close.is_some() {
                return;
            }
            *close = Some(reason);
        }
        self.closed.notify_waiters();
    }

    /// Records s2n-quic's own close event.
    fn set_engine_closed(&self, reason: ConnectionError) {
        self.set_closed(reason);
        self.engine_closed.store(true, Relaxed);
        self.engine_closed_notify.notify_waiters();
    }

    /// Waits until s2n-quic reported the connection closed (for a local close: until it
    /// processed the close and queued the CONNECTION_CLOSE frame).
    pub(crate) async fn engine_closed(&self) {
        loop {
            let notified = self.engine_closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.engine_closed.load(Relaxed) {
                return;
            }
            notified.await;
        }
    }

    /// Why the connection ended, if it has.
    pub(crate) fn close_reason(&self) -> Option<ConnectionError> {
        lock(&self.close).clone()
    }

    /// Waits until the connection has ended.
    pub(crate) async fn closed(&self) -> ConnectionError {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// The current maximum UDP payload of the active path, bytes.
    pub(crate) fn mtu(&self) -> u16 {
        self.mtu.load(Relaxed) as u16
    }

    pub(crate) fn set_mtu(&self, mtu: u16) {
        self.mtu.store(u64::from(mtu), Relaxed);
    }

    pub(crate) fn exporter(&self) -> Option<ExporterSecret> {
        lock(&self.exporter).clone()
    }

    pub(crate) fn peer_chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        lock(&self.peer_chain).clone()
    }

    /// Fills the engine-side fields of `stats`.
    pub(crate) fn fill(&self, s: &mut ConnectionStats) {
        s.rtt = Duration::from_nanos(self.rtt_nanos.load(Relaxed));
        let min = self.min_rtt_nanos.load(Relaxed);
        s.min_rtt = (min > 0).then(|| Duration::from_nanos(min));
        s.congestion_window = self.cwnd.load(Relaxed);
        s.bytes_in_flight = Some(self.bytes_in_flight.load(Relaxed));
        s.udp_datagrams_sent = self.udp_tx_datagrams.load(Relaxed);
        s.udp_bytes_sent = self.udp_tx_bytes.load(Relaxed);
        s.udp_datagrams_received = self.udp_rx_datagrams.load(Relaxed);
        s.udp_bytes_received = self.udp_rx_bytes.load(Relaxed);
        s.packets_lost = self.lost_packets.load(Relaxed);
        s.bytes_lost = self.lost_bytes.load(Relaxed);
        s.congestion_events = Some(self.congestion_events.load(Relaxed));
        s.path_mtu = self.mtu();
    }
}

/// The subscriber's per-connection context: a handle to the shared state.
#[derive(Debug)]
pub(crate) struct ConnContext {
    pub(crate) shared: Arc<ConnShared>,
}

/// STOQ's s2n-quic event subscriber: statistics, close reasons, exporter and peer identity.
#[derive(Debug)]
pub(crate) struct StoqSubscriber {
    pub(crate) endpoint: Arc<EndpointShared>,
    /// The path MTU (UDP payload) connections start with, until s2n reports one.
    pub(crate) initial_mtu: u16,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Subscriber for StoqSubscriber {
    type ConnectionContext = ConnContext;

    fn create_connection_context(
        &mut self,
        _meta: &ConnectionMeta,
        _info: &ConnectionInfo,
    ) -> Self::ConnectionContext {
        let shared = ConnShared::default();
        shared.set_mtu(self.initial_mtu);
        ConnContext {
            shared: Arc::new(shared),
        }
    }

    fn on_datagram_sent(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        event: &events::DatagramSent,
    ) {
        let s = &context.shared;
        s.udp_tx_datagrams.fetch_add(1, Relaxed);
        s.udp_tx_bytes.fetch_add(u64::from(event.len), Relaxed);
    }

    fn on_datagram_received(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        event: &events::DatagramReceived,
    ) {
        let s = &context.shared;
        s.udp_rx_datagrams.fetch_add(1, Relaxed);
        s.udp_rx_bytes.fetch_add(u64::from(event.len), Relaxed);
    }

    fn on_recovery_metrics(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        event: &events::RecoveryMetrics,
    ) {
        let s = &context.shared;
        s.rtt_nanos.store(nanos(event.smoothed_rtt), Relaxed);
        s.min_rtt_nanos.store(nanos(event.min_rtt), Relaxed);
        s.cwnd.store(u64::from(event.congestion_window), Relaxed);
        s.bytes_in_flight
            .store(u64::from(event.bytes_in_flight), Relaxed);
    }

    fn on_packet_lost(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        event: &events::PacketLost,
    ) {
        let s = &context.shared;
        s.lost_packets.fetch_add(1, Relaxed);
        s.lost_bytes.fetch_add(u64::from(event.bytes_lost), Relaxed);
    }

    fn on_congestion(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        _event: &events::Congestion,
    ) {
        context.shared.congestion_events.fetch_add(1, Relaxed);
    }

    fn on_mtu_updated(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        event: &events::MtuUpdated,
    ) {
        context.shared.set_mtu(event.mtu);
    }

    fn on_tls_exporter_ready(
        &mut self,
        context: &mut ConnContext,
        _meta: &ConnectionMeta,
        event: &events::TlsExporterReady,
    ) {
        let s = &context.shared;
        // Bind the exporter secret rustls logged for this handshake to this connection:
        // the one whose derivation matches the engine's own exporter output.
        let mut probe = [0u8; 32];
        if event
            .session
            .tls_exporter(PROBE_LABEL, b"", &mut probe)
            .is_ok()
        {
            if let Some(secret) = self.endpoint.exporter.take_matching(&probe) {
                *lock(&s.exporter) = Some(secret);
            }
        }
        // rustls reports the verified chain the peer presented (none for a client that sent
        // no certificate).
        if let Ok(chain) = event.session.peer_cert_chain_der() {
            if !chain.is_empty() {
                *lock(&s.peer_chain) = Some(chain.into_iter().map(CertificateDer::from).collect());
            }
        }
        if !s.handshake_complete.swap(true, Relaxed) {
            self.endpoint.open.fetch_add(1, Relaxed);
        }
    }

    fn on_connection_closed(
        &mut self,
        context: &mut ConnContext,
        meta: &ConnectionMeta,
        event: &events::ConnectionClosed,
    ) {
        let s = &context.shared;
        if s.handshake_complete.load(Relaxed) {
            self.endpoint.open.fetch_sub(1, Relaxed);
        } else if matches!(meta.endpoint_type, events::EndpointType::Server { .. }) {
            self.endpoint.handshake_failures.fetch_add(1, Relaxed);
            tracing::warn!(error = %event.error, "incoming handshake failed");
        }
        s.set_engine_closed(connection_error(event.error));
    }
}
