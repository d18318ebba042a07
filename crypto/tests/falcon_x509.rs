//! FALCON-signed X.509 certificates: a self-signed CA, leaves, signature and validity checks.

use std::time::{Duration, SystemTime};

use stoq_crypto::falcon::{
    certificate_public_key, check_validity, verify_certificate_signature, FalconCa, FalconLevel,
    FalconSecretKey, FALCON_CA_VALIDITY, FALCON_LEAF_VALIDITY,
};
use stoq_crypto::{ephemeral_material, CryptoError};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::Certificate;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca() -> FalconCa {
    FalconCa::generate(FalconLevel::L512, "STOQ FALCON test CA", FALCON_CA_VALIDITY).unwrap()
}

fn ext<T: for<'a> Decode<'a> + x509_cert::der::oid::AssociatedOid>(
    cert: &Certificate,
) -> (bool, T) {
    let e = cert
        .tbs_certificate
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.extn_id == T::OID)
        .unwrap_or_else(|| panic!("extension {} missing", T::OID));
    (e.critical, T::from_der(e.extn_value.as_bytes()).unwrap())
}

#[test]
fn ca_is_self_signed_and_marked_as_a_ca() {
    for level in [FalconLevel::L512, FalconLevel::L1024] {
        let ca = FalconCa::generate(level, "STOQ FALCON test CA", FALCON_CA_VALIDITY).unwrap();
        verify_certificate_signature(ca.cert(), ca.key().public_key()).unwrap();
        assert_eq!(
            &certificate_public_key(ca.cert()).unwrap(),
            ca.key().public_key()
        );
        let cert = Certificate::from_der(ca.cert()).unwrap();
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.issuer, tbs.subject);
        assert_eq!(tbs.subject.to_string(), "CN=STOQ FALCON test CA");
        assert_eq!(
            cert.signature_algorithm.oid,
            level.default_algorithm().oid()
        );
        assert!(cert.signature_algorithm.parameters.is_none());
        assert_eq!(
            cert.signature.raw_bytes().len(),
            level.default_algorithm().params().signature_len
        );
        let (critical, bc) = ext::<BasicConstraints>(&cert);
        assert!(critical && bc.ca);
        let (_, ku) = ext::<KeyUsage>(&cert);
        assert!(ku.0.contains(KeyUsages::KeyCertSign));
        check_validity(ca.cert(), SystemTime::now()).unwrap();
        check_validity(ca.cert(), SystemTime::now() + FALCON_CA_VALIDITY - DAY).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}

#[test]
fn leaf_round_trip_names_usage_and_validity() {
    let ca = ca();
    let leaf = ca
        .issue_leaf(
            FalconLevel::L512,
            &["LocalHost.", "127.0.0.1", "::1"],
            FALCON_LEAF_VALIDITY,
        )
        .unwrap();
    verify_certificate_signature(&leaf.cert, ca.key().public_key()).unwrap();
    assert_eq!(
        &certificate_public_key(&leaf.cert).unwrap(),
        leaf.key.public_key()
    );
    let cert = Certificate::from_der(&leaf.cert).unwrap();
    let tbs = &cert.tbs_certificate;
    assert_eq!(tbs.issuer.to_string(), "CN=STOQ FALCON test CA");
    let (_, san) = ext::<SubjectAltName>(&cert);
    let mut dns = vec![];
    let mut ips = vec![];
    for name in &san.0 {
        match name {
            GeneralName::DnsName(d) => dns.push(d.to_string()),
            GeneralName::IpAddress(ip) => ips.push(ip.as_bytes().len()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(dns, ["localhost"]);
    ips.sort();
    assert_eq!(ips, [4, 16]);
    let (_, bc) = ext::<BasicConstraints>(&cert);
    assert!(!bc.ca);
    let (_, ku) = ext::<KeyUsage>(&cert);
    assert!(ku.0.contains(KeyUsages::DigitalSignature));
    assert!(!ku.0.contains(KeyUsages::KeyCertSign));
    let (_, eku) = ext::<ExtendedKeyUsage>(&cert);
    assert!(eku
        .0
        .contains(&x509_cert::der::oid::db::rfc5280::ID_KP_SERVER_AUTH));
    let v = &tbs.validity;
    let life = v
        .not_after
        .to_system_time()
        .duration_since(v.not_before.to_system_time())
        .unwrap();
    assert!(
        life.abs_diff(FALCON_LEAF_VALIDITY + Duration::from_secs(300)) < Duration::from_secs(5)
    );

    let identity = leaf.identity();
    assert_eq!(identity.cert_chain, vec![leaf.cert.clone()]);
    let back = FalconSecretKey::from_pkcs8_der(identity.key.secret_der()).unwrap();
    assert_eq!(back.public_key(), leaf.key.public_key());
}

#[test]
fn leaves_of_either_level_under_cas_of_either_level() {
    for ca_level in [FalconLevel::L512, FalconLevel::L1024] {
        let ca = FalconCa::generate(ca_level, "CA", FALCON_CA_VALIDITY).unwrap();
        for leaf_level in [FalconLevel::L512, FalconLevel::L1024] {
            let leaf = ca.issue_leaf(leaf_level, &["a.test"], DAY).unwrap();
            verify_certificate_signature(&leaf.cert, ca.key().public_key()).unwrap();
            assert_eq!(
                certificate_public_key(&leaf.cert).unwrap().algorithm(),
                leaf_level.default_algorithm()
            );
        }
    }
}

#[test]
fn a_tampered_tbs_or_signature_fails() {
    let ca = ca();
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["victim.test"], DAY)
        .unwrap();
    let der = leaf.cert.to_vec();
    // Change the name inside the TBS (SAN and CN) to another of the same length.
    let needle = b"victim.test";
    let mut tampered = der.clone();
    let mut count = 0;
    for i in 0..tampered.len() - needle.len() {
        if &tampered[i..i + needle.len()] == needle {
            tampered[i..i + needle.len()].copy_from_slice(b"attack.test");
            count += 1;
        }
    }
    assert_eq!(count, 2, "CN and SAN");
    let err = verify_certificate_signature(&tampered, ca.key().public_key()).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
    // A flipped bit in the signature.
    let mut tampered = der.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 0x04;
    let err = verify_certificate_signature(&tampered, ca.key().public_key()).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
}

#[test]
fn the_wrong_issuer_fails() {
    let ca = ca();
    let other = FalconCa::generate(FalconLevel::L512, "STOQ FALCON test CA", DAY).unwrap();
    let leaf = ca.issue_leaf(FalconLevel::L512, &["a.test"], DAY).unwrap();
    let err = verify_certificate_signature(&leaf.cert, other.key().public_key()).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
    // The leaf's own key did not sign it either.
    let err = verify_certificate_signature(&leaf.cert, leaf.key.public_key()).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
    // An issuer key of the other level cannot have made a 512 signature.
    let big = FalconSecretKey::generate(FalconLevel::L1024);
    let err = verify_certificate_signature(&leaf.cert, big.public_key()).unwrap_err();
    assert!(matches!(err, CryptoError::WrongAlgorithm { .. }), "{err:?}");
}

#[test]
fn expired_and_not_yet_valid_are_detectable() {
    let ca = ca();
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let now = SystemTime::now();
    let expired = ca
        .issue_for(key.public_key(), &["old.test"], now - 30 * DAY, now - DAY)
        .unwrap();
    // Still correctly signed: expiry is a separate check.
    verify_certificate_signature(&expired, ca.key().public_key()).unwrap();
    let err = check_validity(&expired, now).unwrap_err();
    assert!(matches!(err, CryptoError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");
    check_validity(&expired, now - 2 * DAY).unwrap();

    let future = ca
        .issue_for(key.public_key(), &["new.test"], now + DAY, now + 30 * DAY)
        .unwrap();
    let err = check_validity(&future, now).unwrap_err();
    assert!(matches!(err, CryptoError::NotYetValid { .. }), "{err:?}");
}

#[test]
fn ca_from_parts_checks_the_key() {
    let ca = ca();
    let again = FalconCa::from_parts(ca.cert().clone(), ca.key().clone()).unwrap();
    let leaf = again
        .issue_leaf(FalconLevel::L512, &["a.test"], DAY)
        .unwrap();
    verify_certificate_signature(&leaf.cert, ca.key().public_key()).unwrap();
    let err = FalconCa::from_parts(
        ca.cert().clone(),
        FalconSecretKey::generate(FalconLevel::L512),
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn classical_and_malformed_certificates_give_typed_errors() {
    let ca = ca();
    let classical = ephemeral_material(&["localhost"]).unwrap();
    let err = verify_certificate_signature(&classical.roots[0], ca.key().public_key()).unwrap_err();
    assert!(matches!(err, CryptoError::WrongAlgorithm { .. }), "{err:?}");
    let err = certificate_public_key(&classical.roots[0]).unwrap_err();
    assert!(matches!(err, CryptoError::WrongAlgorithm { .. }), "{err:?}");

    let der = ca.cert().to_vec();
    for len in (0..der.len()).step_by(13) {
        let err = verify_certificate_signature(&der[..len], ca.key().public_key()).unwrap_err();
        assert!(
            matches!(err, CryptoError::MalformedDer { .. }),
            "{len}: {err:?}"
        );
        assert!(check_validity(&der[..len], SystemTime::now()).is_err());
    }
    let err = ca
        .issue_leaf(FalconLevel::L512, &["not a name!"], DAY)
        .unwrap_err();
    assert!(matches!(err, CryptoError::InvalidName { .. }), "{err:?}");
    let err = ca.issue_leaf(FalconLevel::L512, &[], DAY).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidName { .. }), "{err:?}");
}
