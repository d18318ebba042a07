//! The whole STOQ conformance suite against the io_uring backend.
stoq_conformance::conformance_suite!(stoq_uring::UringBackend);
