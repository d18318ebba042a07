//! A FIN written after the stream's data was acknowledged reaches the peer.
//!
//! quiche 0.30.0 loses it (cloudflare/quiche#2525): `SendBuf::is_complete()` counted a
//! send side complete once the data up to the final offset was acknowledged, so the ACK
//! that arrives between an application's `stream_send(id, b"", true)` and the next
//! `send()` let quiche collect the stream and drop the queued FIN. The peer read every
//! byte and never the end of the stream, while the sender saw success. In STOQ this
//! stalled about one request stream in 20,000 in the `rpc_1k_100` benchmark until the
//! idle timeout. STOQ builds quiche from `third_party/quiche-0.30.0`, which has the fix.
//!
//! The test drives two quiche connections in memory (no sockets, no timing), in exactly
//! the order that loses the FIN on the unpatched crate.

use std::net::SocketAddr;

use stoq_quiche::config::{ssl_context_builder, Role};

const ALPN: &[u8] = b"fin-test";

fn config(role: Role, tls: &stoq_core::TlsMaterial) -> quiche::Config {
    let ctx = ssl_context_builder(tls, role).expect("TLS context");
    let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx)
        .expect("quiche config");
    c.set_application_protos(&[ALPN]).unwrap();
    c.set_initial_max_data(1 << 20);
    c.set_initial_max_stream_data_bidi_local(1 << 20);
    c.set_initial_max_stream_data_bidi_remote(1 << 20);
    c.set_initial_max_streams_bidi(16);
    c.set_max_idle_timeout(30_000);
    c
}

/// Every packet `from` wants to send now, as datagrams.
fn drain(from: &mut quiche::Connection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        match from.send(&mut buf) {
            Ok((n, _)) => out.push(buf[..n].to_vec()),
            Err(quiche::Error::Done) => return out,
            Err(e) => panic!("send failed: {e:?}"),
        }
    }
}

fn deliver(packets: Vec<Vec<u8>>, to: &mut quiche::Connection, from: SocketAddr, at: SocketAddr) {
    for mut p in packets {
        let info = quiche::RecvInfo { from, to: at };
        match to.recv(&mut p, info) {
            Ok(_) | Err(quiche::Error::Done) => {}
            Err(e) => panic!("recv failed: {e:?}"),
        }
    }
}

/// A client and a server connection, handshake confirmed on both sides, with their
/// (client, server) addresses.
fn established() -> (
    quiche::Connection,
    quiche::Connection,
    SocketAddr,
    SocketAddr,
) {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let (ca, sa): (SocketAddr, SocketAddr) =
        ("[::1]:4000".parse().unwrap(), "[::1]:4433".parse().unwrap());
    let mut ccfg = config(Role::Client, &tls);
    let mut scfg = config(Role::Server, &tls);
    let scid = quiche::ConnectionId::from_ref(&[1; 16]);
    let dcid = quiche::ConnectionId::from_ref(&[2; 16]);
    let mut client = quiche::connect(Some("localhost"), &scid, ca, sa, &mut ccfg).unwrap();
    let mut server = quiche::accept(&dcid, None, sa, ca, &mut scfg).unwrap();
    for _ in 0..10 {
        deliver(drain(&mut client), &mut server, ca, sa);
        deliver(drain(&mut server), &mut client, sa, ca);
    }
    assert!(client.is_established() && server.is_established());
    (client, server, ca, sa)
}

#[test]
fn fin_written_after_the_data_was_acked_reaches_the_peer() {
    let (mut client, mut server, ca, sa) = established();

    // The client sends a whole request: data and FIN.
    client.stream_send(0, b"request", true).unwrap();
    deliver(drain(&mut client), &mut server, ca, sa);
    let mut buf = [0u8; 64];
    let (n, fin) = server.stream_recv(0, &mut buf).unwrap();
    assert_eq!((&buf[..n], fin), (&b"request"[..], true));

    // The server answers without ending its side yet; the client acknowledges the
    // answer, but the ACK is still on its way when the server's application ends the
    // stream with a zero-length FIN.
    server.stream_send(0, b"response", false).unwrap();
    deliver(drain(&mut server), &mut client, sa, ca);
    let ack = drain(&mut client);
    assert!(!ack.is_empty(), "the client acknowledges the response");
    server.stream_send(0, b"", true).unwrap();
    deliver(ack, &mut server, ca, sa);

    // Whatever the server sends from now on must carry the FIN.
    for _ in 0..5 {
        deliver(drain(&mut server), &mut client, sa, ca);
        deliver(drain(&mut client), &mut server, ca, sa);
    }
    let mut got = Vec::new();
    let mut end = false;
    while let Ok((n, fin)) = client.stream_recv(0, &mut buf) {
        got.extend_from_slice(&buf[..n]);
        end |= fin;
    }
    assert_eq!(got, b"response");
    assert!(
        end && client.stream_finished(0),
        "the client read the response but never the end of the stream (cloudflare/quiche#2525)"
    );
}

/// A FIN that arrives in a frame of its own, after the data was read, and is read with a
/// buffer of `stream_readable_len` bytes (0), lets the stream complete.
///
/// quiche 0.30.0 stores such a FIN as a zero-length buffer at the final offset. A read
/// with no room left returns the FIN but leaves that empty buffer in place, so the stream
/// stays "readable" forever and quiche never collects it: the sender's completion (STOQ's
/// `stopped()`) is never observable. In STOQ this hung
/// `bidi_stopped_after_both_halves_finish` in about 1 run in 30 (STOQ's reader asks for
/// exactly `stream_readable_len`). `third_party/quiche-0.30.0` drops the empty buffer.
#[test]
fn a_fin_alone_read_with_no_room_left_lets_the_stream_complete() {
    let (mut client, mut server, ca, sa) = established();

    // The request's data, read at once; then its FIN in a packet of its own, read as
    // STOQ's reader does: with a buffer of `stream_readable_len` bytes, here 0.
    client.stream_send(0, b"ping", false).unwrap();
    deliver(drain(&mut client), &mut server, ca, sa);
    let mut buf = [0u8; 64];
    let (n, fin) = server.stream_recv(0, &mut buf).unwrap();
    assert_eq!((&buf[..n], fin), (&b"ping"[..], false));
    client.stream_send(0, b"", true).unwrap();
    deliver(drain(&mut client), &mut server, ca, sa);
    let want = server.stream_readable_len(0, 64);
    assert_eq!(want, 0, "a FIN alone carries no bytes");
    let (n, fin) = server.stream_recv(0, &mut buf[..want]).unwrap();
    assert_eq!((n, fin), (0, true));
    assert!(
        !server.stream_readable(0),
        "the FIN was read, yet quiche still reports the stream readable"
    );

    // The answer with its FIN, acknowledged: the stream is complete and collected.
    server.stream_send(0, b"pong", true).unwrap();
    for _ in 0..5 {
        deliver(drain(&mut server), &mut client, sa, ca);
        deliver(drain(&mut client), &mut server, ca, sa);
    }
    let mut rbuf = [0u8; 16];
    let (n, fin) = client.stream_recv(0, &mut rbuf).unwrap();
    assert_eq!((&rbuf[..n], fin), (&b"pong"[..], true));
    for _ in 0..5 {
        deliver(drain(&mut client), &mut server, ca, sa);
        deliver(drain(&mut server), &mut client, sa, ca);
    }
    assert!(
        matches!(
            server.stream_capacity(0),
            Err(quiche::Error::InvalidStreamState(0))
        ) && server.stream_closed(0),
        "the server's stream was never collected after both halves finished"
    );
}
