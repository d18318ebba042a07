//! The whole STOQ conformance suite against the io_uring backend's direct engine.
stoq_conformance::conformance_suite!(stoq_uring::TunedUringBackend(
    stoq_uring::UringOptions::default().with_engine(stoq_uring::UringEngine::Direct)
));
