//! The whole STOQ conformance suite against the quinn backend.
stoq_conformance::conformance_suite!(stoq_quinn::QuinnBackend);
