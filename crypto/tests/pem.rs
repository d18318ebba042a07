//! Loading identities and roots from PEM files, and the errors for bad files.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{alpn, pem, Pair};
use stoq_core::TlsMaterial;
use stoq_crypto::{
    client_config, load_identity, load_roots, server_config, CryptoError, LocalCa, LEAF_VALIDITY,
};

struct Files {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: LocalCa,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a leaf for "localhost", written as `leaf.pem` and `leaf-key.pem`.
fn files() -> Files {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = LocalCa::generate().unwrap();
    let id = ca.issue_leaf(&["localhost"], LEAF_VALIDITY).unwrap();
    let cert = dir.join("leaf.pem");
    let key = dir.join("leaf-key.pem");
    std::fs::write(&cert, pem("CERTIFICATE", &id.cert_chain[0])).unwrap();
    std::fs::write(&key, pem("PRIVATE KEY", id.key.secret_der())).unwrap();
    Files {
        _tmp: tmp,
        dir,
        ca,
        cert,
        key,
    }
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The error is `CryptoError::File` for `path`, and its message names the path and
/// contains `needle`.
fn assert_file_error(err: CryptoError, path: &Path, needle: &str) {
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        CryptoError::File { path: p, .. } => assert_eq!(p, path, "{msg}"),
        other => panic!(
            "expected CryptoError::File for {}, got {other:?}",
            path.display()
        ),
    }
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
}

#[test]
fn load_identity_and_roots_round_trip_into_a_handshake() {
    let f = files();
    let identity = load_identity(&f.cert, &f.key).unwrap();
    let roots_path = write(&f.dir, "ca.pem", f.ca.cert_pem());
    let roots = load_roots(&roots_path).unwrap();
    assert_eq!(roots, vec![f.ca.cert().clone()]);
    let material = TlsMaterial {
        identity: Some(identity),
        roots,
        require_client_auth: false,
        identity_source: None,
    };
    let mut pair = Pair::new(
        client_config(&material, &alpn()).unwrap(),
        server_config(&material, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().unwrap();
}

#[test]
fn load_identity_reads_the_whole_chain() {
    let f = files();
    // Leaf followed by the CA, as many tools write a chain file.
    let mut chain = std::fs::read_to_string(&f.cert).unwrap();
    chain.push_str(&f.ca.cert_pem());
    let chain_path = write(&f.dir, "chain.pem", chain);
    let identity = load_identity(&chain_path, &f.key).unwrap();
    assert_eq!(identity.cert_chain.len(), 2);
    assert_eq!(&identity.cert_chain[1], f.ca.cert());
}

#[test]
fn load_roots_reads_every_certificate() {
    let f = files();
    let other = LocalCa::generate().unwrap();
    let path = write(
        &f.dir,
        "roots.pem",
        format!("{}{}", f.ca.cert_pem(), other.cert_pem()),
    );
    assert_eq!(load_roots(&path).unwrap().len(), 2);
}

#[test]
fn missing_files_are_named() {
    let f = files();
    let missing = f.dir.join("nope.pem");
    assert_file_error(
        load_identity(&missing, &f.key).unwrap_err(),
        &missing,
        "missing",
    );
    assert_file_error(
        load_identity(&f.cert, &missing).unwrap_err(),
        &missing,
        "missing",
    );
    assert_file_error(load_roots(&missing).unwrap_err(), &missing, "missing");
}

#[test]
fn a_directory_is_not_a_pem_file() {
    let f = files();
    assert_file_error(load_roots(&f.dir).unwrap_err(), &f.dir, "directory");
}

#[test]
fn a_cert_file_without_certificates_is_named() {
    let f = files();
    // The key file has no certificate in it.
    let err = load_identity(&f.key, &f.key).unwrap_err();
    assert_file_error(err, &f.key, "no certificate in it");
    let empty = write(&f.dir, "empty.pem", "");
    assert_file_error(load_roots(&empty).unwrap_err(), &empty, "no certificate");
}

#[test]
fn a_key_file_without_a_key_is_named() {
    let f = files();
    let err = load_identity(&f.cert, &f.cert).unwrap_err();
    assert_file_error(err, &f.cert, "no private key in it");
}

#[test]
fn a_key_that_does_not_match_the_certificate_names_both_files() {
    let f = files();
    let other = LocalCa::generate()
        .unwrap()
        .issue_leaf(&["localhost"], LEAF_VALIDITY)
        .unwrap();
    let wrong_key = write(
        &f.dir,
        "wrong-key.pem",
        pem("PRIVATE KEY", other.key.secret_der()),
    );
    let err = load_identity(&f.cert, &wrong_key).unwrap_err();
    assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&f.cert.display().to_string()), "{msg}");
    assert!(msg.contains(&wrong_key.display().to_string()), "{msg}");
}

#[test]
fn garbage_pem_is_named() {
    let f = files();
    let bad_base64 = write(
        &f.dir,
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    assert_file_error(
        load_roots(&bad_base64).unwrap_err(),
        &bad_base64,
        "not valid PEM",
    );
    let unterminated = write(
        &f.dir,
        "unterminated.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    );
    assert_file_error(
        load_roots(&unterminated).unwrap_err(),
        &unterminated,
        "not valid PEM",
    );
    let bad_key = write(
        &f.dir,
        "bad-key.pem",
        "-----BEGIN PRIVATE KEY-----\n%%%%\n-----END PRIVATE KEY-----\n",
    );
    assert_file_error(
        load_identity(&f.cert, &bad_key).unwrap_err(),
        &bad_key,
        "not valid PEM",
    );
}

#[test]
fn text_that_is_not_pem_is_named() {
    let f = files();
    let text = write(&f.dir, "notes.txt", "hello, this is not a certificate\n");
    assert_file_error(load_roots(&text).unwrap_err(), &text, "not PEM");
    let der = write(&f.dir, "ca.der", f.ca.cert().as_ref());
    assert_file_error(load_roots(&der).unwrap_err(), &der, "binary DER");
    assert_file_error(load_identity(&f.cert, &der).unwrap_err(), &der, "not PEM");
}

#[test]
fn malformed_der_inside_pem_is_named() {
    let f = files();
    let path = write(
        &f.dir,
        "bad-der.pem",
        pem("CERTIFICATE", b"\x30\x03\x02\x01"),
    );
    assert_file_error(load_roots(&path).unwrap_err(), &path, "malformed DER");
    let bad_key = write(
        &f.dir,
        "bad-der-key.pem",
        pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00"),
    );
    assert_file_error(
        load_identity(&f.cert, &bad_key).unwrap_err(),
        &bad_key,
        "private key",
    );
}

#[test]
fn an_encrypted_key_is_explained() {
    let f = files();
    let path = write(
        &f.dir,
        "enc-key.pem",
        pem("ENCRYPTED PRIVATE KEY", b"\x30\x00"),
    );
    assert_file_error(
        load_identity(&f.cert, &path).unwrap_err(),
        &path,
        "encrypted",
    );
}

#[test]
fn an_expired_certificate_is_reported() {
    let f = files();
    let id = f.ca.issue_leaf(&["localhost"], Duration::ZERO).unwrap();
    let cert = write(&f.dir, "expired.pem", pem("CERTIFICATE", &id.cert_chain[0]));
    let key = write(
        &f.dir,
        "expired-key.pem",
        pem("PRIVATE KEY", id.key.secret_der()),
    );
    std::thread::sleep(Duration::from_millis(1100));
    let err = load_identity(&cert, &key).unwrap_err();
    assert!(matches!(err, CryptoError::Expired { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&cert.display().to_string()) && msg.contains("expired"),
        "{msg}"
    );
}

#[test]
fn file_errors_convert_to_core_tls_errors_with_the_path() {
    let f = files();
    let missing = f.dir.join("absent.pem");
    let err: stoq_core::Error = load_roots(&missing).unwrap_err().into();
    match err {
        stoq_core::Error::Tls(msg) => assert!(msg.contains(&missing.display().to_string())),
        other => panic!("{other:?}"),
    }
}
