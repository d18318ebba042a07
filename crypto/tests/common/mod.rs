//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::Arc;

use stoq_crypto::rustls::pki_types::ServerName;
use stoq_crypto::rustls::{
    self, ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection,
};
use x509_cert::der::pem::LineEnding;

/// Which side of the in-memory handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// A client and a server connected through in-memory buffers.
pub struct Pair {
    pub client: Connection,
    pub server: Connection,
}

impl Pair {
    pub fn new(client: ClientConfig, server: ServerConfig, server_name: &str) -> Pair {
        let name = ServerName::try_from(server_name.to_string()).expect("valid server name");
        Pair {
            client: ClientConnection::new(Arc::new(client), name)
                .unwrap()
                .into(),
            server: ServerConnection::new(Arc::new(server)).unwrap().into(),
        }
    }

    /// Moves TLS records both ways until neither side is handshaking, then exchanges one
    /// application message each way. Returns the first error and the side that raised it.
    pub fn handshake(&mut self) -> Result<(), (Side, rustls::Error)> {
        for _ in 0..16 {
            transfer(&mut self.client, &mut self.server).map_err(|e| (Side::Server, e))?;
            transfer(&mut self.server, &mut self.client).map_err(|e| (Side::Client, e))?;
            if !self.client.is_handshaking() && !self.server.is_handshaking() {
                // Deliver anything still queued (e.g. a client certificate the server rejects
                // after the client considers the handshake done), then prove the keys work.
                self.client.writer().write_all(b"ping").unwrap();
                transfer(&mut self.client, &mut self.server).map_err(|e| (Side::Server, e))?;
                let mut got = [0u8; 4];
                self.server
                    .reader()
                    .read_exact(&mut got)
                    .expect("server reads ping");
                assert_eq!(&got, b"ping");
                self.server.writer().write_all(b"pong").unwrap();
                transfer(&mut self.server, &mut self.client).map_err(|e| (Side::Client, e))?;
                self.client
                    .reader()
                    .read_exact(&mut got)
                    .expect("client reads pong");
                assert_eq!(&got, b"pong");
                return Ok(());
            }
        }
        panic!("handshake did not complete in 16 rounds");
    }
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// PEM-encodes DER under `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    x509_cert::der::pem::encode_string(label, LineEnding::LF, der).unwrap()
}

pub fn alpn() -> Vec<String> {
    vec!["stoq-test".to_string()]
}
