//! Reading X.509 fields (x509-cert).

use std::time::SystemTime;

use x509_cert::der::Decode;
use x509_cert::Certificate;

/// Parses a DER certificate.
pub(crate) fn parse(der: &[u8]) -> Result<Certificate, x509_cert::der::Error> {
    Certificate::from_der(der)
}

/// The certificate's `notAfter`.
pub(crate) fn not_after(der: &[u8]) -> Result<SystemTime, String> {
    parse(der)
        .map(|c| c.tbs_certificate.validity.not_after.to_system_time())
        .map_err(|e| format!("certificate is malformed DER: {e}"))
}
