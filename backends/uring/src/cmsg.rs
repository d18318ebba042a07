//! Socket addresses and control messages in the kernel's layout: what a `SendMsg` SQE
//! carries (destination, ECN, `UDP_SEGMENT` for GSO, source address) and what a multishot
//! `RecvMsg` completion holds (source, ECN, destination address, `UDP_GRO` segment size).
//! The same messages quinn-udp writes and reads with `sendmsg`/`recvmsg`.

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use quinn::udp::EcnCodepoint;

/// Room for the control messages of one datagram: `UDP_SEGMENT`/`UDP_GRO` (an int), the
/// ECN bits (an int) and a packet-info structure (`in6_pktinfo` is the larger), each with
/// its header and padding, with slack for an IPv4 message on a dual-stack socket.
pub(crate) const CONTROL_LEN: usize = 128;

/// Control-message space, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct ControlBuf(pub [u8; CONTROL_LEN]);

/// Writes `addr` into `out` and returns its length, as `msg_name`/`msg_namelen` want it.
pub(crate) fn write_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> u32 {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>() as u32
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

/// Reads a socket address the kernel wrote (a `recvmsg` name field). None for a family
/// other than IPv4/IPv6 or a short field.
pub(crate) fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let mut storage: libc::sockaddr_storage = unsafe_zeroed();
    let n = name.len().min(mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies at most size_of::<sockaddr_storage>() bytes into it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if n >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is aligned.
            let a = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if n >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is aligned.
            let a = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for plain C structs (sockaddr_storage) for which all-zero is valid.
    unsafe { mem::zeroed() }
}

/// What one send carries besides the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendControl {
    pub destination: SocketAddr,
    pub ecn: Option<EcnCodepoint>,
    /// Set only when the payload holds more than one segment.
    pub segment_size: Option<u16>,
    pub src_ip: Option<IpAddr>,
}

/// Encodes `c` into `buf` and returns the number of control bytes (`msg_controllen`).
/// `with_ecn` is false once the kernel refused the ECN message (as quinn-udp does after
/// an `EINVAL`).
pub(crate) fn encode_send(c: &SendControl, with_ecn: bool, buf: &mut ControlBuf) -> usize {
    let mut w = Writer { buf, len: 0 };
    let ecn = c.ecn.map_or(0, |e| e as libc::c_int);
    let v4 = match c.destination {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if with_ecn {
        if v4 {
            w.push(libc::IPPROTO_IP, libc::IP_TOS, ecn);
        } else {
            w.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, ecn);
        }
    }
    if let Some(segment) = c.segment_size {
        w.push(libc::SOL_UDP, libc::UDP_SEGMENT, segment);
    }
    match c.src_ip {
        Some(IpAddr::V4(ip)) => w.push(
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            },
        ),
        Some(IpAddr::V6(ip)) => w.push(
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            },
        ),
        None => {}
    }
    w.len
}

struct Writer<'a> {
    buf: &'a mut ControlBuf,
    len: usize,
}

impl Writer<'_> {
    fn push<T: Copy>(&mut self, level: libc::c_int, ty: libc::c_int, value: T) {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<T>() as u32) } as usize;
        assert!(
            self.len + space <= CONTROL_LEN,
            "control messages exceed CONTROL_LEN"
        );
        let header = libc::cmsghdr {
            cmsg_len: unsafe { libc::CMSG_LEN(mem::size_of::<T>() as u32) } as _,
            cmsg_level: level,
            cmsg_type: ty,
        };
        let base = self.buf.0.as_mut_ptr();
        // SAFETY: the assert above keeps header and value inside the buffer; `len` is a
        // multiple of CMSG_SPACE's alignment and the buffer is 8-aligned, so the header
        // is aligned; the value is written unaligned-safe.
        unsafe {
            let at = base.add(self.len);
            // Zero the whole slot so padding carries no stale bytes.
            std::ptr::write_bytes(at, 0, space);
            at.cast::<libc::cmsghdr>().write(header);
            let data = at.add(mem::size_of::<libc::cmsghdr>());
            data.cast::<T>().write_unaligned(value);
        }
        self.len += space;
    }
}

/// What the control messages of one received datagram said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvControl {
    pub ecn: Option<EcnCodepoint>,
    pub dst_ip: Option<IpAddr>,
    /// The GRO segment size, when the kernel coalesced datagrams.
    pub stride: Option<usize>,
}

/// Decodes the control messages the kernel wrote for one datagram.
pub(crate) fn decode_recv(control: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    let mut at = 0usize;
    while at + hdr_len <= control.len() {
        // SAFETY: bounds checked above; read unaligned since `control` is a byte slice.
        let h: libc::cmsghdr = unsafe {
            control
                .as_ptr()
                .add(at)
                .cast::<libc::cmsghdr>()
                .read_unaligned()
        };
        #[allow(clippy::unnecessary_cast)] // cmsg_len is not usize on every libc
        let len = h.cmsg_len as usize;
        if len < hdr_len || len > control.len() - at {
            break;
        }
        let data = &control[at + hdr_len..at + len];
        let int =
            || (data.len() >= 4).then(|| i32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
        match (h.cmsg_level, h.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_TOS) | (libc::IPPROTO_IP, libc::IP_RECVTOS) => {
                if let Some(&b) = data.first() {
                    out.ecn = EcnCodepoint::from_bits(b);
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                if let Some(v) = int() {
                    out.ecn = EcnCodepoint::from_bits(v as u8);
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
                if data.len() >= mem::size_of::<libc::in_pktinfo>() =>
            {
                // SAFETY: length checked; read unaligned.
                let p: libc::in_pktinfo =
                    unsafe { data.as_ptr().cast::<libc::in_pktinfo>().read_unaligned() };
                out.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes())));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                if data.len() >= mem::size_of::<libc::in6_pktinfo>() =>
            {
                // SAFETY: length checked; read unaligned.
                let p: libc::in6_pktinfo =
                    unsafe { data.as_ptr().cast::<libc::in6_pktinfo>().read_unaligned() };
                out.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
            }
            (libc::SOL_UDP, libc::UDP_GRO) => {
                if let Some(v) = int().filter(|v| *v > 0) {
                    out.stride = Some(v as usize);
                }
            }
            _ => {}
        }
        // SAFETY: pure arithmetic (aligns the length up).
        let step = unsafe { libc::CMSG_SPACE((len - hdr_len) as u32) } as usize;
        at += step.max(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_the_kernel_layout() {
        for addr in [
            "127.0.0.1:4433".parse::<SocketAddr>().unwrap(),
            "[::1]:443".parse().unwrap(),
            "[::ffff:10.0.0.1]:9".parse().unwrap(),
        ] {
            let mut storage: libc::sockaddr_storage = unsafe_zeroed();
            let len = write_sockaddr(addr, &mut storage) as usize;
            // SAFETY: reading the bytes just written.
            let bytes =
                unsafe { std::slice::from_raw_parts(&storage as *const _ as *const u8, len) };
            assert_eq!(read_sockaddr(bytes), Some(addr));
        }
        assert_eq!(read_sockaddr(&[0u8; 4]), None);
    }

    #[test]
    fn send_messages_decode_as_the_kernel_would_read_them() {
        let mut buf = ControlBuf([0xAA; CONTROL_LEN]);
        let c = SendControl {
            destination: "[::1]:1".parse().unwrap(),
            ecn: Some(EcnCodepoint::Ect0),
            segment_size: Some(1452),
            src_ip: Some("::1".parse().unwrap()),
        };
        let len = encode_send(&c, true, &mut buf);
        // Reading our own encoding back with the receive decoder checks the framing
        // (lengths, alignment) of every message; UDP_SEGMENT is a u16, so only check it
        // was framed, by finding the PKTINFO after it.
        let d = decode_recv(&buf.0[..len]);
        assert_eq!(d.ecn, Some(EcnCodepoint::Ect0));
        assert_eq!(d.dst_ip, Some("::1".parse().unwrap()));
        let without_ecn = encode_send(&c, false, &mut buf);
        assert!(without_ecn < len);
    }
}
