//! Keying-material export (RFC 8446 section 7.5) after the handshake.
//!
//! s2n-quic lends the TLS session to the application only inside the
//! `on_tls_exporter_ready` event (`s2n-quic-core/src/event.rs`, `TlsSession::tls_exporter`);
//! the connection handle has no exporter, so arbitrary labels cannot be asked for later.
//! STOQ therefore keeps the one input the exporter needs, the TLS 1.3 *exporter master
//! secret*, and derives exactly what rustls's `export_keying_material` derives:
//!
//! ```text
//! TLS-Exporter(label, context, length) =
//!     HKDF-Expand-Label(Derive-Secret(exporter_master_secret, label, ""),
//!                       "exporter", Hash(context), length)
//! ```
//!
//! rustls hands the secret to the configuration's `KeyLog` as `EXPORTER_SECRET` during
//! the handshake (keyed by the client random, which the s2n event does not expose). STOQ's
//! [`ExporterKeyLog`] stores it per endpoint; when the handshake completes, the subscriber
//! asks the engine's real exporter for a fixed probe label and binds the stored secret
//! whose derivation gives the same bytes. The binding is therefore checked against the
//! engine itself, and a connection without a bound secret reports an error instead of
//! inventing one.
//!
//! The secret stays in process memory for the connection's life (rustls keeps the same
//! secret inside the session anyway); it is overwritten when dropped. An application's own
//! key log (e.g. `SSLKEYLOGFILE`) keeps working: every entry is forwarded to it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::crypto::tls13::OkmBlock;
use rustls::crypto::CryptoProvider;
use rustls::{KeyLog, SupportedCipherSuite, Tls13CipherSuite};

use crate::events::lock;

/// The label the subscriber exports at handshake completion to bind a logged secret to its
/// connection. Never handed to applications.
pub(crate) const PROBE_LABEL: &[u8] = b"EXPORTER-stoq-s2n-secret-binding";

/// Logged secrets not yet bound to a connection are dropped after this long (their
/// handshake failed) ...
const PENDING_TTL: Duration = Duration::from_secs(120);
/// ... or when this many are pending (a flood of handshakes that never complete).
const PENDING_MAX: usize = 4096;

/// A TLS 1.3 exporter master secret and the cipher suite whose hash it uses.
#[derive(Clone)]
pub(crate) struct ExporterSecret {
    secret: Arc<SecretBytes>,
    suite: &'static Tls13CipherSuite,
}

impl std::fmt::Debug for ExporterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("ExporterSecret")
            .field("suite", &self.suite.common.suite)
            .finish_non_exhaustive()
    }
}

/// Secret bytes, overwritten on drop.
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

/// Why an export failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportError {
    /// The label is longer than TLS allows (249 bytes after the "tls13 " prefix).
    LabelTooLong,
    /// More than 255 hash blocks were requested (HKDF's limit).
    OutputTooLong,
}

impl ExporterSecret {
    /// Fills `out` with TLS-Exporter(`label`, `context`, `out.len()`), as rustls does.
    pub(crate) fn export(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportError> {
        export(self.suite, &self.secret.0, out, label, context)
    }
}

/// RFC 8446 section 7.1 HKDF-Expand-Label, writing `out.len()` bytes. `context` is always a
/// hash output here (at most 64 bytes).
fn expand_label(
    suite: &Tls13CipherSuite,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), ExportError> {
    const PREFIX: &[u8] = b"tls13 ";
    let label_len =
        u8::try_from(PREFIX.len() + label.len()).map_err(|_| ExportError::LabelTooLong)?;
    debug_assert!(context.len() <= 64, "context is a hash output");
    let context_len = context.len() as u8;
    let out_len = u16::try_from(out.len()).map_err(|_| ExportError::OutputTooLong)?;
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
    expander
        .expand_slice(
            &[
                &out_len.to_be_bytes(),
                &[label_len],
                PREFIX,
                label,
                &[context_len],
                context,
            ],
            out,
        )
        .map_err(|_| ExportError::OutputTooLong)
}

/// TLS-Exporter (RFC 8446 section 7.5) from an exporter master secret.
fn export(
    suite: &Tls13CipherSuite,
    exporter_master_secret: &[u8],
    out: &mut [u8],
    label: &[u8],
    context: &[u8],
) -> Result<(), ExportError> {
    let hash = suite.common.hash_provider;
    let empty_hash = hash.hash(&[]);
    let mut derived = vec![0u8; hash.output_len()];
    expand_label(
        suite,
        exporter_master_secret,
        label,
        empty_hash.as_ref(),
        &mut derived,
    )?;
    let derived = SecretBytes(derived);
    let context_hash = hash.hash(context);
    expand_label(suite, &derived.0, b"exporter", context_hash.as_ref(), out)
}

/// Exporter secrets logged by rustls and not yet bound to a connection (one store per
/// endpoint).
#[derive(Default)]
pub(crate) struct ExporterStore {
    pending: Mutex<VecDeque<(Instant, SecretBytes)>>,
    /// The TLS 1.3 suites the endpoint's rustls configuration can negotiate.
    suites: Mutex<Vec<&'static Tls13CipherSuite>>,
}

impl std::fmt::Debug for ExporterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterStore")
            .field("pending", &lock(&self.pending).len())
            .finish_non_exhaustive()
    }
}

impl ExporterStore {
    /// Records which cipher suites the endpoint's TLS configuration uses.
    pub(crate) fn set_provider(&self, provider: &CryptoProvider) {
        let mut suites = lock(&self.suites);
        suites.clear();
        for s in &provider.cipher_suites {
            // Irrefutable unless another crate enables rustls's `tls12` feature.
            #[allow(irrefutable_let_patterns)]
            if let SupportedCipherSuite::Tls13(t) = s {
                // One suite per hash algorithm suffices: the exporter only uses the hash.
                if !suites.iter().any(|k| {
                    k.common.hash_provider.algorithm() == t.common.hash_provider.algorithm()
                }) {
                    suites.push(t);
                }
            }
        }
    }

    fn push(&self, secret: &[u8]) {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        while pending
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > PENDING_TTL)
            || pending.len() >= PENDING_MAX
        {
            pending.pop_front();
        }
        pending.push_back((now, SecretBytes(secret.to_vec())));
    }

    /// Removes and returns the pending secret whose exporter output for [`PROBE_LABEL`]
    /// (empty context, 32 bytes) equals `probe`.
    pub(crate) fn take_matching(&self, probe: &[u8; 32]) -> Option<ExporterSecret> {
        let suites = lock(&self.suites).clone();
        let mut pending = lock(&self.pending);
        let mut out = [0u8; 32];
        // Newest first: the handshake that just completed logged its secret recently.
        for i in (0..pending.len()).rev() {
            let secret = &pending[i].1 .0;
            for suite in suites
                .iter()
                .filter(|s| s.common.hash_provider.output_len() == secret.len())
            {
                if export(suite, secret, &mut out, PROBE_LABEL, b"").is_ok() && out == *probe {
                    let (_, secret) = pending.remove(i).expect("index in range");
                    return Some(ExporterSecret {
                        secret: Arc::new(secret),
                        suite,
                    });
                }
            }
        }
        None
    }
}

/// A rustls [`KeyLog`] that keeps `EXPORTER_SECRET`s for [`ExporterStore`] and forwards
/// everything to the configuration's previous key log.
#[derive(Debug)]
pub(crate) struct ExporterKeyLog {
    pub(crate) inner: Arc<dyn KeyLog>,
    pub(crate) store: Arc<crate::events::EndpointShared>,
}

const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

impl KeyLog for ExporterKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET {
            self.store.exporter.push(secret);
        }
        if self.inner.will_log(label) {
            self.inner.log(label, client_random, secret);
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET || self.inner.will_log(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Runs an in-memory TLS 1.3 handshake with STOQ's rustls configs and the exporter key
    /// log on both sides.
    fn handshake() -> (
        rustls::ClientConnection,
        rustls::ServerConnection,
        Arc<crate::events::EndpointShared>,
        Arc<crate::events::EndpointShared>,
    ) {
        let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
        let alpn = vec!["t".to_string()];
        let client_store = Arc::new(crate::events::EndpointShared::default());
        let server_store = Arc::new(crate::events::EndpointShared::default());
        let mut cc = stoq_crypto::client_config(&tls, &alpn).unwrap();
        cc.key_log = Arc::new(ExporterKeyLog {
            inner: cc.key_log.clone(),
            store: client_store.clone(),
        });
        client_store.exporter.set_provider(cc.crypto_provider());
        let mut sc = stoq_crypto::server_config(&tls, &alpn).unwrap();
        sc.key_log = Arc::new(ExporterKeyLog {
            inner: sc.key_log.clone(),
            store: server_store.clone(),
        });
        server_store.exporter.set_provider(sc.crypto_provider());
        let mut client =
            rustls::ClientConnection::new(Arc::new(cc), "localhost".try_into().unwrap()).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(sc)).unwrap();
        let mut buf = Vec::new();
        for _ in 0..10 {
            buf.clear();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        // Exercise the record layer once, so both sides are fully established.
        client.writer().write_all(b"ping").unwrap();
        let _ = server.reader().read(&mut [0u8; 4]);
        (client, server, client_store, server_store)
    }

    #[test]
    fn derivation_matches_rustls_and_binds_by_probe() {
        let (client, server, cs, ss) = handshake();
        for (name, conn_export, store) in [
            (
                "client",
                Box::new(|out: &mut [u8], l: &[u8], c: &[u8]| {
                    client.export_keying_material(out, l, Some(c)).map(|_| ())
                })
                    as Box<dyn Fn(&mut [u8], &[u8], &[u8]) -> Result<(), rustls::Error>>,
                &cs,
            ),
            (
                "server",
                Box::new(|out: &mut [u8], l: &[u8], c: &[u8]| {
                    server.export_keying_material(out, l, Some(c)).map(|_| ())
                }),
                &ss,
            ),
        ] {
            let mut probe = [0u8; 32];
            conn_export(&mut probe, PROBE_LABEL, b"").unwrap();
            // A wrong probe binds nothing.
            assert!(store.exporter.take_matching(&[0u8; 32]).is_none(), "{name}");
            let secret = store.exporter.take_matching(&probe).expect(name);
            // Bound secrets leave the store.
            assert!(store.exporter.take_matching(&probe).is_none(), "{name}");
            for (label, context, len) in [
                (&b"EXPORTER-stoq test"[..], &b"ctx"[..], 32usize),
                (b"EXPORTER-other", b"", 64),
                (b"x", &[7u8; 300][..], 1000),
            ] {
                let mut want = vec![0u8; len];
                let mut got = vec![0u8; len];
                conn_export(&mut want, label, context).unwrap();
                secret.export(&mut got, label, context).unwrap();
                assert_eq!(got, want, "{name}: label {label:?}");
            }
            let mut huge = vec![0u8; 255 * 48 + 1];
            assert_eq!(
                secret.export(&mut huge, b"l", b""),
                Err(ExportError::OutputTooLong)
            );
            assert_eq!(
                secret.export(&mut [0u8; 8], &[b'a'; 250], b""),
                Err(ExportError::LabelTooLong)
            );
        }
    }

    #[test]
    fn pending_secrets_are_bounded() {
        let store = ExporterStore::default();
        for i in 0..(PENDING_MAX + 10) {
            store.push(&(i as u64).to_be_bytes());
        }
        assert_eq!(lock(&store.pending).len(), PENDING_MAX);
    }
}
