//! memcached's UDP framing and the rule that keeps the door from amplifying.
//!
//! Every datagram starts with 8 bytes, big-endian: request id, sequence number, datagram
//! count, reserved. A request is one datagram (sequence 0, count 1); a reply may span up to
//! 65,535 datagrams of at most `DATAGRAM_BYTES_MAX` bytes each, header included, numbered
//! from 0, each repeating the request id and the count.
//!
//! **Amplification.** A UDP source address can be forged, so a reply may be aimed at a
//! victim. A sender in `udp_allow` (networks the operator vouches for; loopback by default)
//! gets any reply; any other sender gets at most `AMPLIFICATION_MAX` times the bytes of its
//! request datagram, headers included. A reply over that is not sent: the sender gets
//! `SERVER_ERROR use TCP` instead (smaller than any request, so it always fits).

use std::net::{IpAddr, SocketAddr};

/// Bytes of the frame header.
pub const FRAME_BYTES: usize = 8;
/// Largest reply datagram, header included (memcached's `UDP_MAX_PAYLOAD_SIZE`).
pub const DATAGRAM_BYTES_MAX: usize = 1400;
/// Payload bytes per reply datagram.
pub const PAYLOAD_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - FRAME_BYTES;
/// A sender outside `udp_allow` gets at most this many times its request's bytes.
pub const AMPLIFICATION_MAX: usize = 3;
/// What an over-budget sender gets instead of its reply.
pub const USE_TCP: &[u8] = b"SERVER_ERROR use TCP\r\n";

/// The request id and payload of a request datagram; `None` if it is not one (too short for
/// a header, or part of a multi-datagram request, which memcached does not take either).
pub fn request(datagram: &[u8]) -> Option<(u16, &[u8])> {
    let header = datagram.get(..FRAME_BYTES)?;
    let field = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if field(2) != 0 || field(4) != 1 {
        return None;
    }
    Some((field(0), &datagram[FRAME_BYTES..]))
}

/// Datagrams a reply of `payload_bytes` takes (at least one, even when empty).
pub fn datagrams_for(payload_bytes: usize) -> usize {
    payload_bytes.div_ceil(PAYLOAD_BYTES_MAX).max(1)
}

/// Bytes a reply of `payload_bytes` takes on the wire, headers included.
pub fn wire_bytes(payload_bytes: usize) -> usize {
    payload_bytes + FRAME_BYTES * datagrams_for(payload_bytes)
}

/// The header of reply datagram `sequence` of `count`.
pub fn header(request_id: u16, sequence: u16, count: u16) -> [u8; FRAME_BYTES] {
    let mut h = [0u8; FRAME_BYTES];
    h[0..2].copy_from_slice(&request_id.to_be_bytes());
    h[2..4].copy_from_slice(&sequence.to_be_bytes());
    h[4..6].copy_from_slice(&count.to_be_bytes());
    h
}

/// The reply to send for `payload` to a sender whose request was `request_bytes` long:
/// `payload` itself, or `USE_TCP` when the sender is not allowed so much, or `None` when a
/// reply cannot be framed at all (more than 65,535 datagrams: the sender gets `USE_TCP` too).
pub fn allowed_reply(payload: &[u8], request_bytes: usize, trusted: bool) -> &[u8] {
    let fits_count = datagrams_for(payload.len()) <= u16::MAX as usize;
    let within = wire_bytes(payload.len()) <= AMPLIFICATION_MAX * request_bytes;
    if fits_count && (trusted || within) {
        payload
    } else {
        USE_TCP
    }
}

/// A network: an address and a prefix length (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|e| format!("{text:?}: {e}"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={bits}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Whether `peer` is in any of `networks`.
pub fn trusted(networks: &[Network], peer: SocketAddr) -> bool {
    networks.iter().any(|n| n.contains(peer.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frames_are_checked_and_replies_numbered() {
        assert_eq!(request(&[0, 7, 0, 0, 0, 1, 0, 0, b'x']), Some((7, &b"x"[..])));
        assert_eq!(request(&[0, 7, 0, 0, 0, 1, 0]), None, "short header");
        assert_eq!(request(&[0, 7, 0, 1, 0, 2, 0, 0]), None, "second of two");
        assert_eq!(request(&[0, 7, 0, 0, 0, 2, 0, 0]), None, "first of two");
        assert_eq!(header(0x0102, 3, 4), [1, 2, 0, 3, 0, 4, 0, 0]);
        assert_eq!(datagrams_for(0), 1);
        assert_eq!(datagrams_for(PAYLOAD_BYTES_MAX), 1);
        assert_eq!(datagrams_for(PAYLOAD_BYTES_MAX + 1), 2);
        assert_eq!(wire_bytes(PAYLOAD_BYTES_MAX + 1), PAYLOAD_BYTES_MAX + 1 + 16);
    }

    #[test]
    fn untrusted_senders_get_at_most_three_times_their_request() {
        let request_bytes = 20;
        let small = vec![b'v'; 3 * request_bytes - FRAME_BYTES];
        assert_eq!(allowed_reply(&small, request_bytes, false), &small[..]);
        let over = vec![b'v'; 3 * request_bytes - FRAME_BYTES + 1];
        assert_eq!(allowed_reply(&over, request_bytes, false), USE_TCP);
        assert_eq!(allowed_reply(&over, request_bytes, true), &over[..]);
        // The refusal fits the budget of the smallest request ("get k\r\n" + header).
        assert!(wire_bytes(USE_TCP.len()) <= AMPLIFICATION_MAX * (FRAME_BYTES + 7));
    }

    #[test]
    fn networks_parse_and_match() {
        let loopback: Network = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains("127.1.2.3".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loopback.contains("128.0.0.1".parse().unwrap()));
        let host: Network = "::1".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("::2".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("nonsense".parse::<Network>().is_err());
    }
}
