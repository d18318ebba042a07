//! Parsing and resolving `host:port` strings.

use std::net::SocketAddr;

use crate::PhoenixError;

/// Splits `host:port`, `[v6]:port` or `a.b.c.d:port` into the host (without brackets) and
/// the port.
pub(crate) fn split_host_port(input: &str) -> Result<(String, u16), PhoenixError> {
    let bad = |why: String| PhoenixError::BadAddress {
        input: input.to_string(),
        why,
    };
    if let Ok(addr) = input.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = if let Some(rest) = input.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing `]` after the IPv6 address".into()))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("expected `:port` after `]`".into()))?;
        (host, port)
    } else {
        let (host, port) = input
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port (e.g. localhost:4433)".into()))?;
        if host.contains(':') {
            return Err(bad(
                "an IPv6 address needs brackets: [address]:port".to_string()
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("the host is empty".into()));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(format!("port {port:?} is not a number from 0 to 65535")))?;
    Ok((host.to_string(), port))
}

/// Resolves `input` to the host part (the TLS server name) and its addresses, in the
/// resolver's order.
pub(crate) async fn resolve(input: &str) -> Result<(String, Vec<SocketAddr>), PhoenixError> {
    let (host, port) = split_host_port(input)?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok((host, vec![SocketAddr::new(ip, port)]));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| PhoenixError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(PhoenixError::Resolve {
            host,
            reason: "the resolver returned no addresses".into(),
        });
    }
    Ok((host, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_form() {
        assert_eq!(
            split_host_port("localhost:4433").unwrap(),
            ("localhost".into(), 4433)
        );
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(split_host_port("[::]:0").unwrap(), ("::".into(), 0));
        assert_eq!(
            split_host_port("127.0.0.1:9").unwrap(),
            ("127.0.0.1".into(), 9)
        );
        for bad in [
            "nohost:notaport",
            "localhost",
            ":80",
            "::1:80",
            "[::1]80",
            "[::1:80",
            "host:70000",
        ] {
            match split_host_port(bad) {
                Err(PhoenixError::BadAddress { input, .. }) => assert_eq!(input, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
