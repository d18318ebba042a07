//! UDP socket set-up shared by backends that bind their own sockets.

use std::net::SocketAddr;

use crate::{Error, TransportConfig};

/// Binds a UDP socket at `addr` as every STOQ backend does: dual-stack when binding an IPv6
/// address (so `[::]` also accepts IPv4 peers, where the OS allows it) and the send and
/// receive buffer sizes from `cfg` (the kernel may cap them at `wmem_max`/`rmem_max`).
/// Errors name the address and the step that failed.
pub fn bind_udp(addr: SocketAddr, cfg: &TransportConfig) -> Result<std::net::UdpSocket, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = |what: &str| format!("{what} UDP socket {addr}");
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io(ctx("creating"), e))?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped peers on `[::]`; ignore failure (some systems forbid it).
        let _ = socket.set_only_v6(false);
    }
    if let Some(n) = cfg.socket_send_buffer {
        socket
            .set_send_buffer_size(n)
            .map_err(|e| Error::io(ctx("sizing send buffer of"), e))?;
    }
    if let Some(n) = cfg.socket_receive_buffer {
        socket
            .set_recv_buffer_size(n)
            .map_err(|e| Error::io(ctx("sizing receive buffer of"), e))?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| Error::io(ctx("binding"), e))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_both_families_and_reports_conflicts_with_the_address() {
        let cfg = TransportConfig::default();
        let v6 = bind_udp("[::1]:0".parse().unwrap(), &cfg).unwrap();
        let taken = v6.local_addr().unwrap();
        bind_udp("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        match bind_udp(taken, &cfg) {
            Err(Error::Io { context, .. }) => assert!(context.contains(&taken.to_string())),
            other => panic!("binding a taken port: {other:?}"),
        }
    }
}
