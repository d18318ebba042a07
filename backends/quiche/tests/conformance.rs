//! The whole STOQ conformance suite against the quiche backend.
stoq_conformance::conformance_suite!(stoq_quiche::QuicheBackend);
