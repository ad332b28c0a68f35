//! Address-validation tokens: a keyed hash of the sender's address, as QUIC's retry tokens.
//! A sender that echoes its token proved it receives at that address; until then, replies are
//! limited to three times the request bytes so cradle cannot be used for amplification.

use std::net::{IpAddr, SocketAddr};

/// The amplification limit for unvalidated senders.
pub(crate) const AMPLIFICATION_FACTOR: usize = 3;

const CACHE_SLOTS: usize = 64;

/// Derives tokens, with a small direct-mapped cache so a busy sender costs one hash.
#[derive(Debug)]
pub(crate) struct Tokens {
    key: [u8; 32],
    cache: [Option<(SocketAddr, u64)>; CACHE_SLOTS],
}

impl Tokens {
    pub(crate) fn new(key: [u8; 32]) -> Tokens {
        Tokens { key, cache: [None; CACHE_SLOTS] }
    }

    /// The token of `addr` (never 0, which means "no token").
    pub(crate) fn token(&mut self, addr: SocketAddr) -> u64 {
        let slot = (usize::from(addr.port()) ^ ip_low_bits(addr.ip())) % CACHE_SLOTS;
        if let Some((cached, token)) = self.cache[slot] {
            if cached == addr {
                return token;
            }
        }
        let token = derive(&self.key, addr);
        self.cache[slot] = Some((addr, token));
        token
    }
}

fn ip_low_bits(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(ip) => usize::from(ip.octets()[3]),
        IpAddr::V6(ip) => usize::from(ip.octets()[15]),
    }
}

fn derive(key: &[u8; 32], addr: SocketAddr) -> u64 {
    let mut input = [0u8; 19];
    let used = match addr.ip() {
        IpAddr::V4(ip) => {
            input[0] = 4;
            input[1..5].copy_from_slice(&ip.octets());
            5
        }
        IpAddr::V6(ip) => {
            input[0] = 6;
            input[1..17].copy_from_slice(&ip.octets());
            17
        }
    };
    input[used..used + 2].copy_from_slice(&addr.port().to_le_bytes());
    let hash = blake3::keyed_hash(key, &input[..used + 2]);
    let token = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    token.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_address_and_key() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let mut t = Tokens::new([1; 32]);
        let ta = t.token(a);
        assert_eq!(t.token(a), ta);
        assert_ne!(t.token(b), ta);
        assert_ne!(Tokens::new([2; 32]).token(a), ta);
        assert_eq!(derive(&[1; 32], a), ta, "the cache returns what derive computes");
    }
}
