//! Post-handshake FALCON authentication (`stoq_crypto::falcon::post_handshake`): the
//! mechanism that gives every engine mutual FALCON authentication, including engines whose
//! TLS stack cannot carry a FALCON chain (quiche's BoringSSL).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stoq_core::{
    Capability, Connection, ConnectionError, ConnectionHandle, Error, FalconAuthFailure, Identity,
    Side, StreamId, Transport, FALCON_AUTH_CLOSE_CODE,
};
use stoq_crypto::falcon::post_handshake::{
    connection_transcript, signed_transcript, AuthMessage, AuthRejection, FalconAuthConfig,
    FalconAuthTransport, AUTH_EXPORTER_LABEL, AUTH_EXPORTER_LEN, AUTH_HEADER_LEN, AUTH_MAGIC,
    AUTH_VERSION, MAX_AUTH_MESSAGE,
};
use stoq_crypto::falcon::{FalconCa, FalconLeaf, FalconLevel, FalconSecretKey};
use stoq_crypto::rustls::pki_types::CertificateDer;

use crate::util::{payload, spawn_echo, LOCALHOST_V6};
use crate::{ensure, ContractResult, Failure, Harness, Outcome};

const CAP: Capability = Capability::FalconPostHandshake;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A FALCON CA with a server leaf for `localhost` and a client leaf.
struct Fixture {
    ca: FalconCa,
    server_leaf: FalconLeaf,
    client_leaf: FalconLeaf,
}

impl Fixture {
    fn new() -> Result<Fixture, Failure> {
        let ca = FalconCa::generate(FalconLevel::L512, "STOQ conformance FALCON CA", DAY)?;
        let server_leaf = ca.issue_leaf(FalconLevel::L512, &["localhost"], DAY)?;
        let client_leaf = ca.issue_leaf(FalconLevel::L512, &["conformance-client"], DAY)?;
        Ok(Fixture {
            ca,
            server_leaf,
            client_leaf,
        })
    }

    fn anchors(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.cert().clone()]
    }

    fn server_config(&self) -> Result<FalconAuthConfig, Failure> {
        Ok(FalconAuthConfig::from_leaf(
            &self.server_leaf,
            &self.anchors(),
        )?)
    }

    fn client_config(&self) -> Result<FalconAuthConfig, Failure> {
        Ok(FalconAuthConfig::from_leaf(
            &self.client_leaf,
            &self.anchors(),
        )?)
    }
}

fn wrapped_server(
    h: &Harness,
    config: FalconAuthConfig,
) -> Result<Arc<FalconAuthTransport>, Failure> {
    let inner = h.server_endpoint(LOCALHOST_V6, h.config.clone())?;
    Ok(Arc::new(FalconAuthTransport::new(inner, config)?))
}

fn wrapped_client(
    h: &Harness,
    server: &dyn Transport,
    config: FalconAuthConfig,
) -> Result<FalconAuthTransport, Failure> {
    let inner = h.client_endpoint(server.local_addr()?, h.config.clone())?;
    Ok(FalconAuthTransport::new(inner, config)?)
}

/// FALCON leaves from one FALCON CA authenticate client and server after the handshake, on
/// any engine: `connect`/`accept` (also through `Arc<dyn Transport>`) return authenticated
/// connections; each side's `falcon_peer()` and `peer_identity()` are the other's FALCON
/// leaf; the reserved streams are hidden (the application's first unidirectional streams
/// are 6 and 7); application streams and datagrams work afterwards. A backend without the
/// capability is refused by `FalconAuthTransport::new` with `Unsupported(FalconPostHandshake)`.
pub async fn falcon_mutual_auth_post_handshake(h: Harness) -> ContractResult {
    let fx = Fixture::new()?;
    if !h.capabilities().contains(CAP) {
        for (backend, is_server) in [(&h.server, true), (&h.client, false)] {
            if backend.capabilities().contains(CAP) {
                continue;
            }
            let inner = if is_server {
                h.server_endpoint(LOCALHOST_V6, h.config.clone())?
            } else {
                h.client_endpoint(LOCALHOST_V6, h.config.clone())?
            };
            let r = FalconAuthTransport::new(inner, fx.server_config()?);
            ensure!(
                matches!(r, Err(Error::Unsupported(c)) if c == CAP),
                "{} lacks {CAP} but wrapping it did not say Unsupported",
                backend.name()
            );
        }
        return Ok(Outcome::Unsupported(CAP));
    }

    let server = wrapped_server(&h, fx.server_config()?)?;
    let addr = server.local_addr()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept_authenticated().await })
    };
    let client = wrapped_client(&h, &*server, fx.client_config()?)?;
    let conn = client.connect_authenticated(addr, "localhost").await?;
    let server_conn = tokio::time::timeout(Duration::from_secs(10), accept).await???;

    // Identities: each side sees the other's verified FALCON leaf.
    ensure!(
        conn.falcon_peer().leaf() == &fx.server_leaf.cert,
        "the client's falcon_peer() is not the server's FALCON leaf"
    );
    ensure!(
        server_conn.falcon_peer().leaf() == &fx.client_leaf.cert,
        "the server's falcon_peer() is not the client's FALCON leaf"
    );
    ensure!(
        conn.peer_identity()
            .and_then(|c| c.into_iter().next())
            .as_ref()
            == Some(&fx.server_leaf.cert),
        "the client's peer_identity() is not the server's FALCON leaf"
    );
    ensure!(
        server_conn
            .peer_identity()
            .and_then(|c| c.into_iter().next())
            .as_ref()
            == Some(&fx.client_leaf.cert),
        "the server's peer_identity() is not the client's FALCON leaf"
    );
    if h.capabilities().contains(Capability::PeerIdentity) {
        let tls_leaf = &h
            .tls
            .identity
            .as_ref()
            .expect("harness identity")
            .cert_chain[0];
        ensure!(
            conn.tls_peer_identity()
                .and_then(|c| c.into_iter().next())
                .as_ref()
                == Some(tls_leaf),
            "tls_peer_identity() is not the server's TLS certificate"
        );
    }

    // Application unidirectional streams, both ways: the reserved streams 2 and 3 are
    // hidden, so the first application streams are 6 (client) and 7 (server).
    for (opener, acceptor, want_id, msg) in [
        (
            conn.clone() as ConnectionHandle,
            server_conn.clone() as ConnectionHandle,
            StreamId(6),
            &b"client after FALCON"[..],
        ),
        (
            server_conn.clone() as ConnectionHandle,
            conn.clone() as ConnectionHandle,
            StreamId(7),
            &b"server after FALCON"[..],
        ),
    ] {
        let mut send = opener.open_uni().await?;
        ensure!(
            send.id() == want_id,
            "the first application uni stream is {}, expected {want_id}",
            send.id()
        );
        send.write_all(msg).await?;
        send.finish().await?;
        let mut recv =
            tokio::time::timeout(Duration::from_secs(10), acceptor.accept_uni()).await??;
        ensure!(
            recv.id() == want_id,
            "the peer accepted stream {} first, expected {want_id}",
            recv.id()
        );
        let got = recv.read_to_end(1024).await?;
        ensure!(
            got.as_deref() == Some(msg),
            "uni stream {want_id} carried {got:?}"
        );
    }

    // A bidirectional echo.
    let echo = spawn_echo(server_conn.clone());
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"authenticated with FALCON after the handshake")
        .await?;
    send.finish().await?;
    let back = recv.read_to_end(1024).await?;
    ensure!(
        back.as_deref() == Some(&b"authenticated with FALCON after the handshake"[..]),
        "echo returned {back:?}"
    );
    echo.abort();

    // Datagrams, retried (unreliable even on loopback).
    if h.capabilities().contains(Capability::Datagrams) {
        let server_conn = server_conn.clone();
        let echo = tokio::spawn(async move {
            while let Ok(d) = server_conn.recv_datagram().await {
                let _ = server_conn.send_datagram(d);
            }
        });
        let d = payload(7, 200);
        let mut echoed = false;
        for _ in 0..10 {
            conn.send_datagram(d.clone())?;
            if let Ok(Ok(back)) =
                tokio::time::timeout(Duration::from_millis(500), conn.recv_datagram()).await
            {
                if back == d {
                    echoed = true;
                    break;
                }
            }
        }
        echo.abort();
        ensure!(echoed, "no datagram came back after authentication");
    }

    // The decorator as `Arc<dyn Transport>`: a second connection on the same endpoints.
    let dyn_client: Arc<dyn Transport> = Arc::new(client);
    let dyn_server: Arc<dyn Transport> = server.clone();
    let accept = tokio::spawn(async move { dyn_server.accept().await });
    let second = dyn_client.connect(addr, "localhost").await?;
    let second_server = tokio::time::timeout(Duration::from_secs(10), accept).await???;
    ensure!(
        second
            .peer_identity()
            .and_then(|c| c.into_iter().next())
            .as_ref()
            == Some(&fx.server_leaf.cert),
        "a connection made through Arc<dyn Transport> shows another peer identity"
    );
    ensure!(
        second_server
            .peer_identity()
            .and_then(|c| c.into_iter().next())
            .as_ref()
            == Some(&fx.client_leaf.cert),
        "a connection accepted through Arc<dyn Transport> shows another peer identity"
    );
    ensure!(
        server.auth_failures() == 0,
        "{} authentication failures on the server",
        server.auth_failures()
    );
    for c in [conn as ConnectionHandle, server_conn, second, second_server] {
        c.close(0, b"done");
    }
    Ok(Outcome::Passed)
}

/// What a misbehaving client (a raw, unwrapped connection) sends on its reserved stream.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// A signature over the server role's transcript.
    WrongRole,
    /// A signature over another connection's exporter.
    OtherConnection,
    /// A signature over a transcript for another ALPN.
    OtherAlpn,
    /// A good signature with a flipped bit.
    TamperedSignature,
    /// A FALCON certificate, but the message names ECDSA P-256 as the scheme.
    WrongScheme,
    /// The harness's classical (ECDSA) certificate instead of a FALCON one.
    ClassicalCertificate,
    /// Nothing: a peer that does not use the mechanism.
    SendsNothing,
    /// Application bytes on stream 2: a peer that does not use the mechanism but talks.
    NotTheMechanism,
    /// A header announcing a body over the limit.
    Oversized,
}

impl Misbehaviour {
    fn expected(self) -> FalconAuthFailure {
        match self {
            Misbehaviour::WrongRole
            | Misbehaviour::OtherConnection
            | Misbehaviour::OtherAlpn
            | Misbehaviour::TamperedSignature => FalconAuthFailure::BadSignature,
            Misbehaviour::WrongScheme | Misbehaviour::ClassicalCertificate => {
                FalconAuthFailure::WrongAlgorithm
            }
            Misbehaviour::SendsNothing => FalconAuthFailure::TimedOut,
            Misbehaviour::NotTheMechanism | Misbehaviour::Oversized => FalconAuthFailure::Malformed,
        }
    }
}

/// The close a side sees when its peer rejected it: the FALCON close code, and the reason
/// naming `failure` where both engines carry reasons.
fn check_rejected_by_peer(
    h: &Harness,
    what: &str,
    seen: &ConnectionError,
    failure: FalconAuthFailure,
) -> Result<(), Failure> {
    match seen {
        ConnectionError::ApplicationClosed { code, reason } if *code == FALCON_AUTH_CLOSE_CODE => {
            if h.capabilities().contains(Capability::CloseReason) {
                let want = format!("FALCON authentication failed: {failure}");
                ensure!(
                    reason[..] == *want.as_bytes(),
                    "{what}: the peer saw reason {:?}, expected {want:?}",
                    String::from_utf8_lossy(reason)
                );
            }
            ensure!(seen.is_falcon_auth_failure(), "{what}: is_falcon_auth_failure() is false");
            Ok(())
        }
        other => Err(Failure(format!(
            "{what}: the rejected side saw {other}, expected ApplicationClosed with code {FALCON_AUTH_CLOSE_CODE:#x}"
        ))),
    }
}

/// The verifying side's typed error.
fn check_rejection(
    what: &str,
    e: &ConnectionError,
    want: FalconAuthFailure,
) -> Result<(), Failure> {
    match e {
        ConnectionError::FalconAuth { failure, .. } if *failure == want => Ok(()),
        other => Err(Failure(format!(
            "{what}: the verifying side reported {other}, expected FalconAuth({want})"
        ))),
    }
}

/// The next accept attempt on `server` from a peer on `port`, which must be a rejection.
async fn rejection_from(
    server: &FalconAuthTransport,
    port: u16,
    what: &str,
) -> Result<AuthRejection, Failure> {
    for _ in 0..8 {
        let attempt = tokio::time::timeout(Duration::from_secs(15), server.accept_attempt())
            .await
            .map_err(|_| Failure(format!("{what}: the server reported no outcome (a hang)")))??;
        match attempt {
            Err(r) if r.remote_addr.port() == port => return Ok(r),
            Ok(c) if c.remote_addr().port() == port => {
                return Err(Failure(format!(
                    "{what}: the server accepted the connection"
                )))
            }
            _ => continue, // another peer's attempt
        }
    }
    Err(Failure(format!("{what}: no outcome for the peer")))
}

/// One misbehaving client against a wrapped `server`.
async fn misbehaving_client(
    h: &Harness,
    fx: &Fixture,
    server: &FalconAuthTransport,
    m: Misbehaviour,
) -> Result<(), Failure> {
    let what = format!("client misbehaviour {m:?}");
    let addr = server.local_addr()?;
    let endpoint = h.client_endpoint(addr, h.config.clone())?;
    let port = endpoint.local_addr()?.port();
    let conn = endpoint.connect(addr, "localhost").await?;
    let leaf = &fx.client_leaf;
    let sign = |transcript: &[u8]| -> Result<AuthMessage, Failure> {
        Ok(AuthMessage {
            scheme: leaf.key.algorithm().params().tls_scheme,
            cert_chain: vec![leaf.cert.clone()],
            signature: leaf.key.sign(transcript)?,
        })
    };
    let own = || connection_transcript(&*conn, Side::Client).map_err(Failure::from);
    let mut _other_conn = None;
    let bytes: Option<Vec<u8>> = match m {
        Misbehaviour::WrongRole => {
            Some(sign(&connection_transcript(&*conn, Side::Server)?)?.encode())
        }
        Misbehaviour::OtherConnection => {
            // Another connection, to a plain server: its exporter is not this connection's.
            let plain = h.server_endpoint(LOCALHOST_V6, h.config.clone())?;
            let plain_addr = plain.local_addr()?;
            let accept = tokio::spawn(async move {
                let c = plain.accept().await;
                (plain, c)
            });
            let other = endpoint.connect(plain_addr, "localhost").await?;
            let t = connection_transcript(&*other, Side::Client)?;
            _other_conn = Some((other, accept));
            Some(sign(&t)?.encode())
        }
        Misbehaviour::OtherAlpn => {
            let alpn = b"another-protocol";
            let mut context = vec![0x00];
            context.extend_from_slice(alpn);
            let mut exporter = [0u8; AUTH_EXPORTER_LEN];
            conn.export_keying_material(&mut exporter, AUTH_EXPORTER_LABEL, &context)?;
            Some(sign(&signed_transcript(&exporter, Side::Client, alpn))?.encode())
        }
        Misbehaviour::TamperedSignature => {
            let mut msg = sign(&own()?)?;
            msg.signature[200] ^= 0x10;
            Some(msg.encode())
        }
        Misbehaviour::WrongScheme => {
            let mut msg = sign(&own()?)?;
            msg.scheme = 0x0403; // ecdsa_secp256r1_sha256
            Some(msg.encode())
        }
        Misbehaviour::ClassicalCertificate => {
            let mut msg = sign(&own()?)?;
            msg.cert_chain = h
                .tls
                .identity
                .as_ref()
                .expect("identity")
                .cert_chain
                .clone();
            Some(msg.encode())
        }
        Misbehaviour::SendsNothing => None,
        Misbehaviour::NotTheMechanism => {
            Some(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec())
        }
        Misbehaviour::Oversized => {
            let mut header = Vec::with_capacity(AUTH_HEADER_LEN);
            header.extend_from_slice(&AUTH_MAGIC);
            header.push(AUTH_VERSION);
            header.extend_from_slice(&((MAX_AUTH_MESSAGE as u32) * 16).to_be_bytes());
            header.extend_from_slice(&[0u8; 1000]);
            Some(header)
        }
    };
    if let Some(bytes) = bytes {
        // The server may reject (and close) before the last byte is written: what counts
        // is the outcome checked below, not whether these calls succeed.
        if let Ok(mut send) = conn.open_uni().await {
            if send.write_all(&bytes).await.is_ok() {
                let _ = send.finish().await;
            }
        }
    }
    let rejection = rejection_from(server, port, &what).await?;
    check_rejection(&what, &rejection.error, m.expected())?;
    let seen = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .map_err(|_| Failure(format!("{what}: the client's connection stayed open")))?;
    check_rejected_by_peer(h, &what, &seen, m.expected())?;
    Ok(())
}

/// A wrapped client dials a server presenting a bad FALCON `identity` (or a plain server
/// that never authenticates, for `None`): the client fails with `want`, the server sees
/// the FALCON close.
async fn bad_server(
    h: &Harness,
    fx: &Fixture,
    what: &str,
    identity: Option<Identity>,
    want: FalconAuthFailure,
) -> Result<(), Failure> {
    let client_cfg = fx.client_config()?.with_timeout(Duration::from_secs(3));
    match identity {
        Some(identity) => {
            let server_cfg = FalconAuthConfig::new(&identity, &fx.anchors())?;
            let server = wrapped_server(h, server_cfg)?;
            let client = wrapped_client(h, &*server, client_cfg)?;
            let port = client.local_addr()?.port();
            let addr = server.local_addr()?;
            let accepting = {
                let server = server.clone();
                let what = what.to_string();
                tokio::spawn(async move { rejection_from(&server, port, &what).await })
            };
            let r = client.connect_authenticated(addr, "localhost").await;
            match r {
                Err(Error::Connection(e)) => check_rejection(what, &e, want)?,
                Err(e) => return Err(Failure(format!("{what}: connect failed with {e}"))),
                Ok(_) => return Err(Failure(format!("{what}: the client accepted the server"))),
            }
            ensure!(
                client.auth_failures() == 1,
                "{what}: auth_failures() is not 1"
            );
            let rejection = tokio::time::timeout(Duration::from_secs(15), accepting).await???;
            check_rejected_by_peer(h, what, &rejection.error, want)?;
        }
        None => {
            let plain = h.server_endpoint(LOCALHOST_V6, h.config.clone())?;
            let addr = plain.local_addr()?;
            let accept = {
                let plain = plain.clone();
                tokio::spawn(async move { plain.accept().await })
            };
            let client = wrapped_client(h, &*plain, client_cfg)?;
            let r = client.connect_authenticated(addr, "localhost").await;
            match r {
                Err(Error::Connection(e)) => check_rejection(what, &e, want)?,
                Err(e) => return Err(Failure(format!("{what}: connect failed with {e}"))),
                Ok(_) => return Err(Failure(format!("{what}: the client accepted the server"))),
            }
            let server_conn = tokio::time::timeout(Duration::from_secs(10), accept).await???;
            let seen = tokio::time::timeout(Duration::from_secs(10), server_conn.closed())
                .await
                .map_err(|_| Failure(format!("{what}: the server's connection stayed open")))?;
            check_rejected_by_peer(h, what, &seen, want)?;
        }
    }
    Ok(())
}

/// Every way post-handshake FALCON authentication can fail ends in a typed
/// `ConnectionError::FalconAuth` on the verifying side and a close with
/// `FALCON_AUTH_CLOSE_CODE` seen by the peer, never a panic or a hang: a signature over
/// another role's, another connection's or another ALPN's exporter, a tampered signature,
/// a non-FALCON scheme or certificate (wrong OID), a peer that sends nothing or is not
/// using the mechanism, an oversized message (all checked by the server), and an expired
/// certificate, one for another name, one from an untrusted CA, and a server that does not
/// authenticate at all (checked by the client).
pub async fn falcon_post_handshake_failures_close(h: Harness) -> ContractResult {
    if !h.capabilities().contains(CAP) {
        // The refusal itself is checked by falcon_mutual_auth_post_handshake.
        return Ok(Outcome::Unsupported(CAP));
    }
    let fx = Fixture::new()?;

    // The server verifies misbehaving clients.
    let server = wrapped_server(&h, fx.server_config()?.with_timeout(Duration::from_secs(3)))?;
    for m in [
        Misbehaviour::WrongRole,
        Misbehaviour::OtherConnection,
        Misbehaviour::OtherAlpn,
        Misbehaviour::TamperedSignature,
        Misbehaviour::WrongScheme,
        Misbehaviour::ClassicalCertificate,
        Misbehaviour::NotTheMechanism,
        Misbehaviour::Oversized,
        Misbehaviour::SendsNothing,
    ] {
        misbehaving_client(&h, &fx, &server, m).await?;
    }
    ensure!(
        server.auth_failures() == 9,
        "the server counted {} authentication failures, expected 9",
        server.auth_failures()
    );

    // The client verifies bad servers.
    let now = SystemTime::now();
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let identity = |cert: CertificateDer<'static>| Identity {
        cert_chain: vec![cert],
        key: Arc::new(key.to_private_key_der()),
    };
    let expired = fx.ca.issue_for(
        key.public_key(),
        &["localhost"],
        now - 3 * DAY,
        now - 2 * DAY,
    )?;
    let other_name = fx
        .ca
        .issue_for(key.public_key(), &["other.example"], now - DAY, now + DAY)?;
    let other_ca = FalconCa::generate(FalconLevel::L512, "another FALCON CA", DAY)?;
    let untrusted = other_ca.issue_for(key.public_key(), &["localhost"], now - DAY, now + DAY)?;
    let good = fx
        .ca
        .issue_for(key.public_key(), &["localhost"], now - DAY, now + DAY)?;
    let mut tampered = good.to_vec();
    let at = tampered.len() - 10;
    tampered[at] ^= 0x01; // inside the certificate's signature
    let tampered = CertificateDer::from(tampered);
    for (what, identity, want) in [
        (
            "expired FALCON server certificate",
            Some(identity(expired)),
            FalconAuthFailure::CertificateExpired,
        ),
        (
            "FALCON server certificate for another name",
            Some(identity(other_name)),
            FalconAuthFailure::WrongName,
        ),
        (
            "FALCON server certificate from an untrusted CA",
            Some(identity(untrusted)),
            FalconAuthFailure::UntrustedCertificate,
        ),
        (
            "FALCON server certificate with a tampered signature",
            Some(identity(tampered)),
            FalconAuthFailure::UntrustedCertificate,
        ),
        (
            "server without FALCON authentication",
            None,
            FalconAuthFailure::TimedOut,
        ),
    ] {
        bad_server(&h, &fx, what, identity, want).await?;
    }
    Ok(Outcome::Passed)
}
