//! The whole STOQ conformance suite against the io_uring backend's other engine: quinn's
//! async glue on the io_uring socket (`UringEngine::QuinnGlue`). `conformance.rs` runs it
//! against the default engine.
stoq_conformance::conformance_suite!(stoq_uring::TunedUringBackend(
    stoq_uring::UringOptions::default().with_engine(stoq_uring::UringEngine::QuinnGlue)
));
