//! FALCON keys: generation, sign/verify, SPKI and PKCS#8 encodings, typed errors, key files.

use stoq_crypto::falcon::{
    FalconAlgorithm, FalconLevel, FalconPublicKey, FalconSecretKey, FALCON_ALGORITHMS,
};
use stoq_crypto::{ephemeral_material, CryptoError};
use x509_cert::der::asn1::{BitString, OctetStringRef};
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::{
    AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};

const LEVELS: [FalconLevel; 2] = [FalconLevel::L512, FalconLevel::L1024];

#[test]
fn generated_keys_have_the_table_sizes_and_sign_padded() {
    for level in LEVELS {
        let key = FalconSecretKey::generate(level);
        let alg = key.algorithm();
        assert_eq!(alg, level.default_algorithm());
        assert!(alg.params().padded);
        let p = alg.params();
        assert_eq!(key.secret_bytes().len(), p.secret_key_len);
        assert_eq!(key.public_key().as_bytes().len(), p.public_key_len);
        for msg in [&b""[..], b"hello", &[0xa5; 10_000]] {
            let sig = key.sign(msg).unwrap();
            assert_eq!(sig.len(), p.signature_len, "{alg}");
            assert_eq!(sig[0], 0x30 + level.logn() as u8);
            key.public_key().verify(msg, &sig).unwrap();
        }
    }
}

#[test]
fn verification_fails_for_a_tampered_message_signature_or_other_key() {
    for level in LEVELS {
        let key = FalconSecretKey::generate(level);
        let other = FalconSecretKey::generate(level);
        let sig = key.sign(b"message").unwrap();
        let err = key.public_key().verify(b"messagf", &sig).unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
        for i in [0, 1, 40, 41, 100, sig.len() - 1] {
            let mut bad = sig.clone();
            bad[i] ^= 0x01;
            let err = key.public_key().verify(b"message", &bad).unwrap_err();
            assert!(
                matches!(err, CryptoError::BadSignature { .. }),
                "byte {i}: {err:?}"
            );
        }
        let err = other.public_key().verify(b"message", &sig).unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
        // Truncated or extended: a length error, not a panic.
        for len in [0, 1, 41, sig.len() - 1] {
            let err = key
                .public_key()
                .verify(b"message", &sig[..len])
                .unwrap_err();
            assert!(
                matches!(err, CryptoError::WrongLength { .. }),
                "{len}: {err:?}"
            );
        }
        let mut longer = sig.clone();
        longer.push(0);
        let err = key.public_key().verify(b"message", &longer).unwrap_err();
        assert!(matches!(err, CryptoError::WrongLength { .. }), "{err:?}");
    }
}

#[test]
fn unpadded_keys_sign_variable_length_signatures_that_verify_strictly() {
    for alg in [FalconAlgorithm::Falcon512, FalconAlgorithm::Falcon1024] {
        let key = FalconSecretKey::generate_for(alg);
        let padded_len = alg.level().default_algorithm().params().signature_len;
        let mut lengths = std::collections::BTreeSet::new();
        for i in 0..8u8 {
            let msg = [i; 33];
            let sig = key.sign(&msg).unwrap();
            // fn-dsa signs into the padded length, so the encoding fits it and may fill it
            // exactly (then the two forms are the same bytes).
            assert!(sig.len() <= padded_len, "{alg}: {}", sig.len());
            assert_ne!(
                *sig.last().unwrap(),
                0,
                "{alg}: ends at the encoding's last byte"
            );
            lengths.insert(sig.len());
            key.public_key().verify(&msg, &sig).unwrap();
            // The same signature padded verifies under the padded algorithm, and the padded
            // one is not accepted as unpadded (PQClean's exact-length rule) unless the
            // signature already fills the padded length.
            let mut padded = sig.clone();
            padded.resize(padded_len, 0);
            key.public_key()
                .verify_as(alg.level().default_algorithm(), &msg, &padded)
                .unwrap();
            if sig.len() < padded_len {
                let err = key.public_key().verify(&msg, &padded).unwrap_err();
                assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
            } else {
                key.public_key().verify(&msg, &padded).unwrap();
            }
            let mut one_more = sig.clone();
            one_more.push(0);
            assert!(key.public_key().verify(&msg, &one_more).is_err());
        }
        assert!(lengths.len() > 1, "{alg}: lengths vary: {lengths:?}");
    }
}

#[test]
fn verify_as_refuses_an_algorithm_of_another_level() {
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let sig = key.sign(b"m").unwrap();
    let err = key
        .public_key()
        .verify_as(FalconAlgorithm::FalconPadded1024, b"m", &sig)
        .unwrap_err();
    assert!(matches!(err, CryptoError::WrongAlgorithm { .. }), "{err:?}");
}

#[test]
fn spki_round_trips_in_the_oqs_layout() {
    for params in &FALCON_ALGORITHMS {
        let key = FalconSecretKey::generate_for(params.algorithm);
        let public = key.public_key();
        let der = public.to_spki_der();
        // OID with parameters absent; the bit string is the raw key.
        let spki = SubjectPublicKeyInfoRef::from_der(&der).unwrap();
        assert_eq!(spki.algorithm.oid.to_string(), params.oid);
        assert!(spki.algorithm.parameters.is_none());
        assert_eq!(spki.subject_public_key.raw_bytes(), public.as_bytes());
        // AlgorithmIdentifier: SEQUENCE { OID } right after the outer header.
        let outer_header = 4; // 30 82 xx xx
        assert_eq!(der[outer_header], 0x30);
        assert_eq!(der[outer_header + 1] as usize, params.oid_der.len());
        assert_eq!(
            &der[outer_header + 2..outer_header + 2 + params.oid_der.len()],
            params.oid_der
        );

        assert_eq!(&FalconPublicKey::from_spki_der(&der).unwrap(), public);
        let pem = public.to_spki_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert_eq!(&FalconPublicKey::from_spki_pem(&pem).unwrap(), public);
        assert_eq!(
            &FalconPublicKey::from_bytes(params.algorithm, public.as_bytes()).unwrap(),
            public
        );
    }
}

#[test]
fn pkcs8_round_trips_in_the_oqs_layout() {
    for level in LEVELS {
        let key = FalconSecretKey::generate(level);
        let p = key.algorithm().params();
        let der = key.to_pkcs8_der();
        let info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
        assert_eq!(info.version(), pkcs8::Version::V1);
        assert_eq!(info.algorithm.oid.to_string(), p.oid);
        assert!(info.algorithm.parameters.is_none());
        // privateKey holds an OCTET STRING of secret key || public key.
        let inner = OctetStringRef::from_der(info.private_key).unwrap();
        let mut expected = key.secret_bytes().to_vec();
        expected.extend_from_slice(key.public_key().as_bytes());
        assert_eq!(inner.as_bytes(), expected.as_slice());

        let back = FalconSecretKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.secret_bytes(), key.secret_bytes());
        assert_eq!(back.public_key(), key.public_key());
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = FalconSecretKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.secret_bytes(), key.secret_bytes());
        // The decoded key signs for the original public key.
        let sig = back.sign(b"x").unwrap();
        key.public_key().verify(b"x", &sig).unwrap();

        // Also accepted: the concatenation without the inner OCTET STRING, and the secret
        // key alone.
        for content in [expected.clone(), key.secret_bytes().to_vec()] {
            let alt = pkcs8::PrivateKeyInfo::new(info.algorithm, &content)
                .to_der()
                .unwrap();
            let back = FalconSecretKey::from_pkcs8_der(&alt).unwrap();
            assert_eq!(back.public_key(), key.public_key());
        }
        // A public key that is not the secret key's is refused.
        let other = FalconSecretKey::generate(level);
        let mut mixed = key.secret_bytes().to_vec();
        mixed.extend_from_slice(other.public_key().as_bytes());
        let alt = pkcs8::PrivateKeyInfo::new(info.algorithm, &mixed)
            .to_der()
            .unwrap();
        let err = FalconSecretKey::from_pkcs8_der(&alt).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidKey { .. }), "{err:?}");
    }
}

#[test]
fn raw_keys_are_length_and_content_checked() {
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let alg = key.algorithm();
    let pk = key.public_key().as_bytes();
    let err = FalconPublicKey::from_bytes(alg, &pk[..896]).unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::WrongLength {
                expected: 897,
                found: 896,
                ..
            }
        ),
        "{err:?}"
    );
    let err = FalconPublicKey::from_bytes(FalconAlgorithm::FalconPadded1024, pk).unwrap_err();
    assert!(matches!(err, CryptoError::WrongLength { .. }), "{err:?}");
    let mut bad = pk.to_vec();
    bad[0] = 0x0a; // header claims 1024
    let err = FalconPublicKey::from_bytes(alg, &bad).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidKey { .. }), "{err:?}");
    let mut bad = pk.to_vec();
    bad[1..3].copy_from_slice(&[0xff, 0xff]); // coefficient >= q
    let err = FalconPublicKey::from_bytes(alg, &bad).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidKey { .. }), "{err:?}");

    let sk = key.secret_bytes();
    let err = FalconSecretKey::from_bytes(alg, &sk[1..]).unwrap_err();
    assert!(matches!(err, CryptoError::WrongLength { .. }), "{err:?}");
    let mut bad = sk.to_vec();
    bad[0] = 0x00;
    let err = FalconSecretKey::from_bytes(alg, &bad).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidKey { .. }), "{err:?}");
}

#[test]
fn classical_keys_are_refused_with_wrong_algorithm() {
    let material = ephemeral_material(&["localhost"]).unwrap();
    let identity = material.identity.unwrap();
    let err = FalconSecretKey::from_pkcs8_der(identity.key.secret_der()).unwrap_err();
    assert!(matches!(err, CryptoError::WrongAlgorithm { .. }), "{err:?}");
    assert!(err.to_string().contains("1.2.840.10045.2.1"), "{err}");
    let cert = x509_cert::Certificate::from_der(&identity.cert_chain[0]).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let err = FalconPublicKey::from_spki_der(&spki).unwrap_err();
    assert!(matches!(err, CryptoError::WrongAlgorithm { .. }), "{err:?}");
}

#[test]
fn parameters_must_be_absent() {
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: key.algorithm().oid(),
            parameters: Some(x509_cert::der::asn1::Null.into()),
        },
        subject_public_key: BitString::from_bytes(key.public_key().as_bytes()).unwrap(),
    };
    let err = FalconPublicKey::from_spki_der(&spki.to_der().unwrap()).unwrap_err();
    assert!(matches!(err, CryptoError::MalformedDer { .. }), "{err:?}");
}

#[test]
fn malformed_der_and_pem_give_typed_errors_never_panics() {
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let spki = key.public_key().to_spki_der();
    let pkcs8 = key.to_pkcs8_der();
    for len in 0..spki.len() {
        let err = FalconPublicKey::from_spki_der(&spki[..len]).unwrap_err();
        assert!(
            matches!(err, CryptoError::MalformedDer { .. }),
            "{len}: {err:?}"
        );
    }
    for len in 0..pkcs8.len() {
        let err = FalconSecretKey::from_pkcs8_der(&pkcs8[..len]).unwrap_err();
        assert!(
            matches!(err, CryptoError::MalformedDer { .. }),
            "{len}: {err:?}"
        );
    }
    // Any flipped byte: some error or (inside key bytes) a different valid key; no panic.
    for i in 0..spki.len() {
        let mut bad = spki.clone();
        bad[i] ^= 0x80;
        let _ = FalconPublicKey::from_spki_der(&bad);
    }
    for i in (0..pkcs8.len()).step_by(7) {
        let mut bad = pkcs8.to_vec();
        bad[i] ^= 0x80;
        let _ = FalconSecretKey::from_pkcs8_der(&bad);
    }
    let err = FalconPublicKey::from_spki_der(b"not DER at all").unwrap_err();
    assert!(matches!(err, CryptoError::MalformedDer { .. }), "{err:?}");
    let err = FalconPublicKey::from_spki_pem(
        "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::MalformedDer { .. }), "{err:?}");
    // A private key where a public key is expected: the label says so.
    let err = FalconPublicKey::from_spki_pem(&key.to_pkcs8_pem()).unwrap_err();
    assert!(matches!(err, CryptoError::MalformedDer { .. }), "{err:?}");
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
}

#[cfg(unix)]
#[test]
fn key_files_are_written_owner_only_and_read_back() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let path = dir.path().join("falcon.key");
    key.write_pkcs8_pem(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let back = FalconSecretKey::read_pkcs8_pem(&path).unwrap();
    assert_eq!(back.secret_bytes(), key.secret_bytes());

    // An existing world-readable file is replaced by an owner-only one.
    let loose = dir.path().join("loose.key");
    std::fs::write(&loose, "old").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    key.write_pkcs8_pem(&loose).unwrap();
    let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Errors name the file.
    let err = FalconSecretKey::read_pkcs8_pem(&dir.path().join("missing.key")).unwrap_err();
    assert!(matches!(err, CryptoError::Io { .. }), "{err:?}");
    std::fs::write(dir.path().join("junk.key"), "junk").unwrap();
    let err = FalconSecretKey::read_pkcs8_pem(&dir.path().join("junk.key")).unwrap_err();
    assert!(matches!(err, CryptoError::File { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.key"), "{err}");
}

#[test]
fn secret_keys_zeroize() {
    fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    assert_zeroize_on_drop::<FalconSecretKey>();
    use zeroize::Zeroize;
    let mut key = FalconSecretKey::generate(FalconLevel::L512);
    key.zeroize();
    assert!(key.secret_bytes().iter().all(|&b| b == 0));
    // Debug never shows key bytes.
    let shown = format!("{key:?}");
    assert!(
        shown.contains("FalconPadded512") && shown.len() < 80,
        "{shown}"
    );
}
