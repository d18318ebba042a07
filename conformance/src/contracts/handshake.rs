//! Handshake contracts: ALPN, certificates, address families, identity, exporter.

use stoq_core::{Capability, ConnectionError, Error, Side, TransportConfig};

use crate::util::{LOCALHOST_V4, LOCALHOST_V6};
use crate::{ensure, ContractResult, Failure, Harness, Outcome};

pub async fn handshake_alpn(h: Harness) -> ContractResult {
    let mut server_cfg = h.config.clone();
    server_cfg.alpn = vec!["unused-proto".into(), crate::TEST_ALPN.into()];
    let p = h
        .connect_with(h.config.clone(), server_cfg, LOCALHOST_V6)
        .await?;
    let want = crate::TEST_ALPN.as_bytes().to_vec();
    ensure!(
        p.client.alpn() == Some(want.clone()),
        "client alpn {:?}",
        p.client.alpn()
    );
    ensure!(
        p.server.alpn() == Some(want),
        "server alpn {:?}",
        p.server.alpn()
    );
    ensure!(
        p.client.side() == Side::Client,
        "client side is {:?}",
        p.client.side()
    );
    ensure!(
        p.server.side() == Side::Server,
        "server side is {:?}",
        p.server.side()
    );
    let server_addr = p.server_ep.local_addr()?;
    ensure!(
        p.client.remote_addr().port() == server_addr.port(),
        "client's remote_addr {} is not the server's {}",
        p.client.remote_addr(),
        server_addr
    );
    ensure!(
        p.server.remote_addr().port() == p.client_ep.local_addr()?.port(),
        "server's remote_addr {} is not the client's",
        p.server.remote_addr()
    );
    Ok(Outcome::Passed)
}

/// Expects `connect` to fail with a TLS error satisfying `pred`.
async fn expect_tls_failure(
    h: &Harness,
    client_cfg: TransportConfig,
    server_cfg: TransportConfig,
    client_tls: Option<stoq_core::TlsMaterial>,
    server_name: &str,
    what: &str,
    pred: fn(&ConnectionError) -> bool,
) -> ContractResult {
    expect_tls_failure_with(
        h,
        client_cfg,
        server_cfg,
        client_tls,
        None,
        server_name,
        what,
        pred,
    )
    .await
}

/// [`expect_tls_failure`] with the server's own TLS material (`None`: the harness's).
#[allow(clippy::too_many_arguments)]
async fn expect_tls_failure_with(
    h: &Harness,
    client_cfg: TransportConfig,
    server_cfg: TransportConfig,
    client_tls: Option<stoq_core::TlsMaterial>,
    server_tls: Option<stoq_core::TlsMaterial>,
    server_name: &str,
    what: &str,
    pred: fn(&ConnectionError) -> bool,
) -> ContractResult {
    let server = match server_tls {
        Some(tls) => h.server.bind(stoq_core::EndpointSpec::server(
            LOCALHOST_V6,
            server_cfg,
            tls,
        ))?,
        None => h.server_endpoint(LOCALHOST_V6, server_cfg)?,
    };
    let addr = server.local_addr()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await })
    };
    let client = match client_tls {
        Some(tls) => h
            .client
            .bind(stoq_core::EndpointSpec::client(addr, client_cfg, tls))?,
        None => h.client_endpoint(addr, client_cfg)?,
    };
    let result = client.connect(addr, server_name).await;
    match result {
        Err(Error::Connection(e)) if pred(&e) => {}
        Err(e) => return Err(Failure(format!("{what}: expected a TLS error, got {e}"))),
        Ok(conn) => {
            // Some stacks finish the client's handshake before the server's verdict
            // arrives; the connection must then close with the TLS error at once.
            let e = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed())
                .await
                .map_err(|_| {
                    Failure(format!("{what}: connection was established and stayed up"))
                })?;
            ensure!(
                pred(&e),
                "{what}: connection closed with {e}, not the expected TLS error"
            );
        }
    }
    // The server must not hand the failed connection to the application.
    let r = tokio::time::timeout(std::time::Duration::from_millis(500), accept).await;
    ensure!(
        !matches!(r, Ok(Ok(Ok(_)))),
        "{what}: the server accepted the connection"
    );
    Ok(Outcome::Passed)
}

pub async fn alpn_mismatch_fails(h: Harness) -> ContractResult {
    let mut server_cfg = h.config.clone();
    server_cfg.alpn = vec!["server-only".into()];
    let mut client_cfg = h.config.clone();
    client_cfg.alpn = vec!["client-only".into()];
    expect_tls_failure(
        &h,
        client_cfg,
        server_cfg,
        None,
        "localhost",
        "ALPN mismatch",
        ConnectionError::is_alpn_mismatch,
    )
    .await
}

pub async fn untrusted_certificate_fails(h: Harness) -> ContractResult {
    // The client trusts a different CA than the one that issued the server's certificate.
    let other = stoq_crypto::ephemeral_material(&["localhost"])?;
    let tls = stoq_core::TlsMaterial {
        identity: None,
        roots: other.roots,
        require_client_auth: false,
        identity_source: None,
    };
    expect_tls_failure(
        &h,
        h.config.clone(),
        h.config.clone(),
        Some(tls),
        "localhost",
        "untrusted certificate",
        ConnectionError::is_certificate_error,
    )
    .await
}

pub async fn wrong_server_name_fails(h: Harness) -> ContractResult {
    expect_tls_failure(
        &h,
        h.config.clone(),
        h.config.clone(),
        None,
        "not-this-server.example",
        "wrong server name",
        ConnectionError::is_certificate_error,
    )
    .await
}

pub async fn ipv4_and_ipv6(h: Harness) -> ContractResult {
    let caps = h.capabilities();
    for (bind, cap) in [
        (LOCALHOST_V4, Capability::Ipv4),
        (LOCALHOST_V6, Capability::Ipv6),
    ] {
        if !caps.contains(cap) {
            let r = h.server.bind(stoq_core::EndpointSpec::server(
                bind,
                h.config.clone(),
                h.tls.clone(),
            ));
            ensure!(
                matches!(r, Err(Error::Unsupported(c)) if c == cap),
                "backend lacks {cap} but binding {bind} did not say Unsupported"
            );
            return Ok(Outcome::Unsupported(cap));
        }
        let p = h
            .connect_with(h.config.clone(), h.config.clone(), bind)
            .await?;
        let (mut s, mut r) = p.client.open_bi().await?;
        crate::util::spawn_echo(p.server.clone());
        s.write_all(b"family").await?;
        s.finish().await?;
        let echoed = r.read_to_end(64).await?;
        ensure!(
            echoed.as_deref() == Some(&b"family"[..]),
            "echo over {bind} returned {echoed:?}"
        );
        ensure!(
            p.client.remote_addr().is_ipv4() == bind.is_ipv4(),
            "remote address {} has the wrong family",
            p.client.remote_addr()
        );
    }
    Ok(Outcome::Passed)
}

pub async fn peer_identity(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    if !h.capabilities().contains(Capability::PeerIdentity) {
        ensure!(
            p.client.peer_identity().is_none(),
            "backend lacks peer_identity but returned one"
        );
        return Ok(Outcome::Unsupported(Capability::PeerIdentity));
    }
    let chain = p
        .client
        .peer_identity()
        .ok_or_else(|| Failure("client sees no server certificate".into()))?;
    let leaf = &h
        .tls
        .identity
        .as_ref()
        .expect("harness has an identity")
        .cert_chain[0];
    ensure!(
        chain.first() == Some(leaf),
        "client sees a different leaf certificate"
    );
    ensure!(
        p.server.peer_identity().is_none(),
        "server reports a client certificate although none was sent"
    );
    Ok(Outcome::Passed)
}

pub async fn keying_material_export(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let (mut a, mut b, mut c) = ([0u8; 32], [0u8; 32], [0u8; 32]);
    if !h.capabilities().contains(Capability::KeyingMaterialExport) {
        let r = p
            .client
            .export_keying_material(&mut a, b"stoq test", b"ctx");
        ensure!(
            matches!(r, Err(Error::Unsupported(Capability::KeyingMaterialExport))),
            "backend lacks keying material export but returned {r:?}"
        );
        return Ok(Outcome::Unsupported(Capability::KeyingMaterialExport));
    }
    p.client
        .export_keying_material(&mut a, b"EXPORTER-stoq test", b"ctx")?;
    p.server
        .export_keying_material(&mut b, b"EXPORTER-stoq test", b"ctx")?;
    p.server
        .export_keying_material(&mut c, b"EXPORTER-stoq other", b"ctx")?;
    ensure!(
        a == b,
        "client and server exported different keying material"
    );
    ensure!(a != c, "different labels exported the same keying material");
    ensure!(a != [0u8; 32], "exported keying material is all zero");
    Ok(Outcome::Passed)
}

/// FALCON certificates authenticate both sides inside the TLS 1.3 handshake: a server and a
/// client with FALCON-512 leaves from one FALCON CA (mutual authentication) connect, echo a
/// message, and each sees the other's FALCON leaf. A backend whose TLS stack cannot carry
/// FALCON refuses a FALCON identity at bind with `Unsupported(FalconInHandshake)`.
pub async fn falcon_mutual_auth_in_handshake(h: Harness) -> ContractResult {
    use std::time::Duration;
    use stoq_core::{EndpointSpec, TlsMaterial};
    use stoq_crypto::falcon::{verify_certificate_signature, FalconCa, FalconLevel};

    const CAP: Capability = Capability::FalconInHandshake;
    let day = Duration::from_secs(24 * 3600);
    let ca = FalconCa::generate(FalconLevel::L512, "STOQ conformance FALCON CA", day)?;
    let server_leaf = ca.issue_leaf(FalconLevel::L512, &["localhost"], day)?;
    let client_leaf = ca.issue_leaf(FalconLevel::L512, &["conformance-client"], day)?;
    let roots = vec![ca.cert().clone()];
    let server_tls = TlsMaterial {
        identity: Some(server_leaf.identity()),
        roots: roots.clone(),
        require_client_auth: true,
        identity_source: None,
    };
    let client_tls = TlsMaterial {
        identity: Some(client_leaf.identity()),
        roots,
        require_client_auth: false,
        identity_source: None,
    };
    let server_spec = || EndpointSpec::server(LOCALHOST_V6, h.config.clone(), server_tls.clone());

    if !h.capabilities().contains(CAP) {
        for (backend, spec) in [
            (&h.server, server_spec()),
            (
                &h.client,
                EndpointSpec::client(LOCALHOST_V6, h.config.clone(), client_tls.clone()),
            ),
        ] {
            if !backend.capabilities().contains(CAP) {
                let r = backend.bind(spec);
                ensure!(
                    matches!(r, Err(Error::Unsupported(c)) if c == CAP),
                    "{} lacks {CAP} but binding with a FALCON identity did not say Unsupported",
                    backend.name()
                );
            }
        }
        return Ok(Outcome::Unsupported(CAP));
    }

    let server = h.server.bind(server_spec())?;
    let addr = server.local_addr()?;
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let conn = server.accept().await?;
            let (mut send, mut recv) = conn.accept_bi().await?;
            let msg = recv.read_to_end(1024).await?.unwrap_or_default();
            send.write_all(&msg).await?;
            send.finish().await?;
            Ok::<_, Failure>(conn)
        })
    };
    let client = h
        .client
        .bind(EndpointSpec::client(addr, h.config.clone(), client_tls))?;
    let conn = client.connect(addr, "localhost").await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"authenticated with FALCON").await?;
    send.finish().await?;
    let echo = recv.read_to_end(1024).await?;
    let server_conn = tokio::time::timeout(Duration::from_secs(10), accept).await???;
    ensure!(
        echo.as_deref() == Some(&b"authenticated with FALCON"[..]),
        "echo {echo:?}"
    );
    let seen_by_client = conn
        .peer_identity()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| Failure("the client sees no server certificate".into()))?;
    let seen_by_server = server_conn
        .peer_identity()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| Failure("the server sees no client certificate".into()))?;
    ensure!(
        seen_by_client == server_leaf.cert,
        "the client sees another server leaf"
    );
    ensure!(
        seen_by_server == client_leaf.cert,
        "the server sees another client leaf"
    );
    // Both are FALCON certificates signed by the FALCON CA.
    for leaf in [&seen_by_client, &seen_by_server] {
        verify_certificate_signature(leaf, ca.key().public_key())?;
    }
    conn.close(0, b"done");
    server_conn.close(0, b"done");
    Ok(Outcome::Passed)
}

/// Bad FALCON certificates fail the handshake with a certificate error on the client and
/// no connection on the server: a leaf from a FALCON CA the client does not trust, an
/// expired leaf, a leaf for another name, and a leaf whose signature was tampered with.
/// A backend without FALCON in the handshake reports `Unsupported(FalconInHandshake)`
/// (checked by `falcon_mutual_auth_in_handshake`).
pub async fn falcon_bad_certificates_fail(h: Harness) -> ContractResult {
    use std::time::{Duration, SystemTime};
    use stoq_core::{Identity, TlsMaterial};
    use stoq_crypto::falcon::{FalconCa, FalconLevel, FalconSecretKey};

    if !h.capabilities().contains(Capability::FalconInHandshake) {
        return Ok(Outcome::Unsupported(Capability::FalconInHandshake));
    }
    let day = Duration::from_secs(24 * 3600);
    let ca = FalconCa::generate(FalconLevel::L512, "STOQ conformance FALCON CA", day)?;
    let other_ca = FalconCa::generate(FalconLevel::L512, "another FALCON CA", day)?;
    let client_tls = |ca: &FalconCa| TlsMaterial {
        identity: None,
        roots: vec![ca.cert().clone()],
        require_client_auth: false,
        identity_source: None,
    };
    let server_tls = |cert: stoq_crypto::rustls::pki_types::CertificateDer<'static>,
                      key: &FalconSecretKey| {
        TlsMaterial {
            identity: Some(Identity {
                cert_chain: vec![cert],
                key: std::sync::Arc::new(key.to_private_key_der()),
            }),
            roots: Vec::new(),
            require_client_auth: false,
            identity_source: None,
        }
    };
    let now = SystemTime::now();
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let good = ca.issue_for(key.public_key(), &["localhost"], now - day, now + day)?;
    let expired = ca.issue_for(
        key.public_key(),
        &["localhost"],
        now - 3 * day,
        now - 2 * day,
    )?;
    let other_name = ca.issue_for(key.public_key(), &["other.example"], now - day, now + day)?;
    let mut tampered = good.to_vec();
    // The signature is the last field of the certificate: flip a byte inside it.
    let last = tampered.len() - 10;
    tampered[last] ^= 0x01;
    let tampered = stoq_crypto::rustls::pki_types::CertificateDer::from(tampered);

    for (what, cert, trusted) in [
        ("untrusted FALCON CA", good.clone(), &other_ca),
        ("expired FALCON leaf", expired, &ca),
        ("FALCON leaf for another name", other_name, &ca),
        ("tampered FALCON signature", tampered, &ca),
    ] {
        expect_tls_failure_with(
            &h,
            h.config.clone(),
            h.config.clone(),
            Some(client_tls(trusted)),
            Some(server_tls(cert, &key)),
            "localhost",
            what,
            ConnectionError::is_certificate_error,
        )
        .await?;
    }
    Ok(Outcome::Passed)
}
