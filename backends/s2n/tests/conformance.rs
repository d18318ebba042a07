//! The whole STOQ conformance suite against the s2n-quic backend.
stoq_conformance::conformance_suite!(stoq_s2n::S2nBackend);
