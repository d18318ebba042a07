//! Cross-implementation and known-answer tests: our FALCON (fn-dsa 0.3.0, original Falcon
//! mode) against PQClean's through `pqcrypto-falcon` (test-only), in both directions and for
//! every Open Quantum Safe algorithm, through the raw key and signature bytes; and a stored
//! NIST known-answer vector.

use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use stoq_crypto::falcon::{FalconAlgorithm, FalconPublicKey, FalconSecretKey};
use stoq_crypto::CryptoError;

/// Runs the cross-checks for one pqcrypto-falcon module and our matching algorithm.
macro_rules! cross_check {
    ($name:ident, $module:ident, $alg:expr) => {
        #[test]
        fn $name() {
            use pqcrypto_falcon::$module as pq;
            let alg: FalconAlgorithm = $alg;
            let p = alg.params();
            assert_eq!(pq::public_key_bytes(), p.public_key_len);
            assert_eq!(pq::secret_key_bytes(), p.secret_key_len);
            assert_eq!(pq::signature_bytes(), p.signature_len);
            for round in 0..4u8 {
                let msg: Vec<u8> = (0..(round as usize * 97))
                    .map(|i| i as u8 ^ round)
                    .collect();

                // Ours -> PQClean: our key pair and signature, PQClean verifies.
                let ours = FalconSecretKey::generate_for(alg);
                let sig = ours.sign(&msg).unwrap();
                let pq_pk = pq::PublicKey::from_bytes(ours.public_key().as_bytes()).unwrap();
                let pq_sig = pq::DetachedSignature::from_bytes(&sig).unwrap();
                pq::verify_detached_signature(&pq_sig, &msg, &pq_pk)
                    .unwrap_or_else(|e| panic!("{alg}: PQClean rejects our signature: {e:?}"));
                // PQClean also accepts our secret key and signs for our public key.
                let pq_sk = pq::SecretKey::from_bytes(ours.secret_bytes()).unwrap();
                let their_sig = pq::detached_sign(&msg, &pq_sk);
                match ours.public_key().verify(&msg, their_sig.as_bytes()) {
                    Ok(()) => {}
                    // The documented gap (see below); rare, so only seen now and then.
                    Err(CryptoError::WrongLength { .. }) if !p.padded => {
                        assert!(
                            their_sig.as_bytes().len()
                                > alg.level().default_algorithm().params().signature_len
                        );
                    }
                    Err(e) => panic!("{alg}: we reject PQClean's signature with our key: {e:?}"),
                }

                // PQClean -> ours: their key pair and signature, we verify.
                let (pk, sk) = pq::keypair();
                let their_sig = pq::detached_sign(&msg, &sk);
                let public = FalconPublicKey::from_bytes(alg, pk.as_bytes()).unwrap();
                match public.verify(&msg, their_sig.as_bytes()) {
                    Ok(()) => {}
                    // The one documented gap: an unpadded signature longer than the padded
                    // size cannot be decoded by fn-dsa (PQClean allows up to 752 / 1,462 B).
                    Err(CryptoError::WrongLength { .. }) if !p.padded => {
                        assert!(
                            their_sig.as_bytes().len()
                                > alg.level().default_algorithm().params().signature_len
                        );
                    }
                    Err(e) => panic!("{alg}: we reject PQClean's signature: {e:?}"),
                }
                // Their secret key decodes here, derives their public key, and signs.
                let theirs = FalconSecretKey::from_bytes(alg, sk.as_bytes()).unwrap();
                assert_eq!(theirs.public_key().as_bytes(), pk.as_bytes());
                let sig = theirs.sign(&msg).unwrap();
                pq::verify_detached_signature(
                    &pq::DetachedSignature::from_bytes(&sig).unwrap(),
                    &msg,
                    &pk,
                )
                .unwrap();

                // Both refuse a signature over another message.
                let mut other = msg.clone();
                other.push(1);
                assert!(public.verify(&other, their_sig.as_bytes()).is_err());
                assert!(pq::verify_detached_signature(&pq_sig, &other, &pq_pk).is_err());
            }
        }
    };
}

cross_check!(
    falcon512_cross_checks_with_pqclean,
    falcon512,
    FalconAlgorithm::Falcon512
);
cross_check!(
    falcon1024_cross_checks_with_pqclean,
    falcon1024,
    FalconAlgorithm::Falcon1024
);
cross_check!(
    falconpadded512_cross_checks_with_pqclean,
    falconpadded512,
    FalconAlgorithm::FalconPadded512
);
cross_check!(
    falconpadded1024_cross_checks_with_pqclean,
    falconpadded1024,
    FalconAlgorithm::FalconPadded1024
);

fn kat(name: &str) -> std::collections::HashMap<String, Vec<u8>> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(" = ").unwrap();
            let bytes = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
                .collect();
            (k.to_string(), bytes)
        })
        .collect()
}

/// Checks one stored NIST KAT vector: under `alg` (unpadded) and its padded twin, and under
/// PQClean's `verify`.
fn check_kat(file: &str, alg: FalconAlgorithm, pq_verify: impl Fn(&[u8], &[u8], &[u8]) -> bool) {
    let v = kat(file);
    let (pk, msg, sm) = (&v["pk"], &v["msg"], &v["sm"]);
    let logn = alg.level().logn() as u8;
    // sm = signature length (2, big-endian) || nonce (40) || message || 0x20+logn || s2.
    let sig_len = u16::from_be_bytes([sm[0], sm[1]]) as usize;
    assert_eq!(sm.len(), 2 + 40 + msg.len() + sig_len);
    assert_eq!(&sm[42..42 + msg.len()], msg.as_slice());
    let nonce = &sm[2..42];
    let esig = &sm[42 + msg.len()..];
    assert_eq!(esig[0], 0x20 + logn);
    // The detached form: header 0x30 + logn, nonce, compressed s2.
    let mut detached = vec![0x30 + logn];
    detached.extend_from_slice(nonce);
    detached.extend_from_slice(&esig[1..]);

    let public = FalconPublicKey::from_bytes(alg, pk).unwrap();
    public.verify(msg, &detached).unwrap();
    // Padded it verifies as the padded algorithm.
    let padded_alg = alg.level().default_algorithm();
    let mut padded = detached.clone();
    padded.resize(padded_alg.params().signature_len, 0);
    public.verify_as(padded_alg, msg, &padded).unwrap();
    // A known answer: one changed message bit and it fails.
    let mut other = msg.clone();
    other[0] ^= 1;
    let err = public.verify(&other, &detached).unwrap_err();
    assert!(matches!(err, CryptoError::BadSignature { .. }), "{err:?}");
    // PQClean agrees.
    assert!(pq_verify(pk, &detached, msg));
    assert!(!pq_verify(pk, &detached, &other));
}

#[test]
fn nist_kat_falcon512_vector_verifies() {
    use pqcrypto_falcon::falcon512 as pq;
    check_kat(
        "falcon512-kat-count0.txt",
        FalconAlgorithm::Falcon512,
        |pk, sig, msg| {
            pq::verify_detached_signature(
                &pq::DetachedSignature::from_bytes(sig).unwrap(),
                msg,
                &pq::PublicKey::from_bytes(pk).unwrap(),
            )
            .is_ok()
        },
    );
}

#[test]
fn nist_kat_falcon1024_vector_verifies() {
    use pqcrypto_falcon::falcon1024 as pq;
    check_kat(
        "falcon1024-kat-count0.txt",
        FalconAlgorithm::Falcon1024,
        |pk, sig, msg| {
            pq::verify_detached_signature(
                &pq::DetachedSignature::from_bytes(sig).unwrap(),
                msg,
                &pq::PublicKey::from_bytes(pk).unwrap(),
            )
            .is_ok()
        },
    );
}
