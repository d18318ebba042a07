//! The quinn-direct driver's configuration, public for the criterion benchmarks and for
//! anyone comparing against quinn by hand: quinn 0.11 configured from a STOQ
//! [`TransportConfig`](stoq_core::TransportConfig) the way `stoq-quinn` does it (windows,
//! 1452 B payload pinned, MTU discovery off, GSO, datagram buffers, CUBIC, 4 MiB socket
//! buffers), with `stoq_crypto`'s rustls configurations.

pub use crate::net::{
    quinn_client_config as client_config, quinn_endpoint as endpoint,
    quinn_server_config as server_config, quinn_transport as transport_config,
};
