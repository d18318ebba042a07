//! Reading a quinn-proto connection's TLS session the STOQ way: shared by this backend
//! (through quinn's `Connection`) and by stoq-uring's direct engine (through
//! quinn-proto's), which see the same session types.

use std::any::Any;

use stoq_core::pki_types::CertificateDer;
use stoq_core::{Error, Side};

/// STOQ's side for quinn-proto's.
pub fn side(side: quinn::Side) -> Side {
    match side {
        quinn::Side::Client => Side::Client,
        quinn::Side::Server => Side::Server,
    }
}

/// The negotiated ALPN protocol from the session's handshake data (`handshake_data()`),
/// once the handshake got that far.
pub fn alpn(handshake_data: Option<Box<dyn Any>>) -> Option<Vec<u8>> {
    handshake_data?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The peer's certificate chain from the session's `peer_identity()`, if it sent one.
pub fn peer_certificates(identity: Option<Box<dyn Any>>) -> Option<Vec<CertificateDer<'static>>> {
    identity?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|b| *b)
}

/// The error of a failed keying-material export (rustls refuses only an output longer
/// than TLS allows, or an export before the handshake completed).
pub fn export_failed(_: quinn_proto::crypto::ExportKeyingMaterialError) -> Error {
    Error::Tls("keying material export failed (output too long?)".into())
}
