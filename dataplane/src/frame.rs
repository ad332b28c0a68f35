//! Ethernet II, ARP and IPv4/UDP frames for the kernel-bypass ports (DPDK, AF_XDP): checked
//! views over bytes, the header builder for replies, and a small neighbour table.
//!
//! Safe code with no I/O, so every backend that sees raw frames parses them here and the
//! default build tests it. The rules: a frame is a UDP datagram for this port only if its
//! Ethernet destination is this port's MAC, it is IPv4 without options beyond what IHL says,
//! not a fragment, its lengths agree with each other and with the frame, its IPv4 header
//! checksum is right, its UDP checksum is right or zero, and its destination is this port's
//! address and UDP port. ARP requests for this port's address are answered; everything else
//! is counted by reason ([`FrameCounters`]) and dropped.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Bytes of the Ethernet II header (no VLAN tag).
pub const ETHERNET_BYTES: usize = 14;
/// Bytes of an IPv4 header without options.
pub const IPV4_BYTES: usize = 20;
/// Bytes of the UDP header.
pub const UDP_BYTES: usize = 8;
/// Headers in front of every datagram this crate sends: Ethernet, IPv4 (no options), UDP.
pub const HEADERS_BYTES: usize = ETHERNET_BYTES + IPV4_BYTES + UDP_BYTES;
/// Bytes of an ARP frame for IPv4 over Ethernet (without the Ethernet header).
pub const ARP_BYTES: usize = 28;
/// Shortest Ethernet frame without its FCS; shorter ones are padded on send.
pub const FRAME_BYTES_MIN: usize = 60;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const IP_PROTOCOL_UDP: u8 = 17;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// TTL of the datagrams sent.
const TTL: u8 = 64;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Byte ranges of the headers' fields (smoltcp `wire/` style).
mod field {
    use std::ops::Range;
    pub(super) const ETH_DST: Range<usize> = 0..6;
    pub(super) const ETH_SRC: Range<usize> = 6..12;
    pub(super) const ETH_TYPE: Range<usize> = 12..14;
    // IPv4, from the start of its header.
    pub(super) const IP_VERSION_IHL: usize = 0;
    pub(super) const IP_TOTAL_LEN: Range<usize> = 2..4;
    pub(super) const IP_FLAGS_FRAGMENT: Range<usize> = 6..8;
    pub(super) const IP_TTL: usize = 8;
    pub(super) const IP_PROTOCOL: usize = 9;
    pub(super) const IP_CHECKSUM: Range<usize> = 10..12;
    pub(super) const IP_SRC: Range<usize> = 12..16;
    pub(super) const IP_DST: Range<usize> = 16..20;
    // UDP, from the start of its header.
    pub(super) const UDP_SRC: Range<usize> = 0..2;
    pub(super) const UDP_DST: Range<usize> = 2..4;
    pub(super) const UDP_LEN: Range<usize> = 4..6;
    pub(super) const UDP_CHECKSUM: Range<usize> = 6..8;
    // ARP, from the start of its header.
    pub(super) const ARP_FIXED: Range<usize> = 0..6; // htype 1, ptype 0x0800, hlen 6, plen 4
    pub(super) const ARP_OPER: Range<usize> = 6..8;
    pub(super) const ARP_SHA: Range<usize> = 8..14;
    pub(super) const ARP_SPA: Range<usize> = 14..18;
    pub(super) const ARP_THA: Range<usize> = 18..24;
    pub(super) const ARP_TPA: Range<usize> = 24..28;
}

const ARP_FIXED_BYTES: [u8; 6] = [0, 1, 8, 0, 6, 4];

/// What frames a port dropped, by reason; counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounters {
    /// Shorter than an Ethernet header, or spread over several buffers.
    pub bad_ethernet: u64,
    /// For another Ethernet address.
    pub other_mac: u64,
    /// Neither IPv4 nor ARP (IPv6, VLAN-tagged, LLDP, ...).
    pub other_ethertype: u64,
    /// IPv4 with a wrong version, header length, total length or header checksum.
    pub bad_ipv4: u64,
    /// IPv4 fragments (cradle's datagrams are never fragmented; its values travel as its
    /// own numbered fragments instead).
    pub fragments: u64,
    /// IPv4 but not UDP.
    pub not_udp: u64,
    /// UDP with a wrong length or checksum.
    pub bad_udp: u64,
    /// UDP for another IPv4 address or UDP port.
    pub other_address: u64,
    /// ARP requests for this port's address, answered.
    pub arp_answered: u64,
    /// ARP replies and requests for other addresses (their sender is still learnt), and
    /// malformed ARP.
    pub arp_other: u64,
    /// Datagrams not sent because the peer's Ethernet address is unknown (an ARP request for
    /// it was sent instead).
    pub no_neighbour: u64,
}

impl FrameCounters {
    /// Every frame dropped on receive, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.bad_ethernet
            + self.other_mac
            + self.other_ethertype
            + self.bad_ipv4
            + self.fragments
            + self.not_udp
            + self.bad_udp
            + self.other_address
            + self.arp_other
    }
}

/// What a received frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A UDP datagram for this port: its payload is `frame[payload.0..payload.1]`.
    Udp {
        /// Sender's Ethernet address (to learn).
        src_mac: Mac,
        /// Sender's address and port.
        src: SocketAddrV4,
        /// Start and end of the UDP payload in the frame.
        payload: (usize, usize),
    },
    /// An ARP request for this port's address: answer it with [`write_arp_reply`].
    ArpRequest {
        /// Who asked.
        sender_mac: Mac,
        /// Its address.
        sender_ip: Ipv4Addr,
    },
    /// Anything else, counted in the `FrameCounters` passed to [`parse`]; an ARP sender is
    /// returned so its address can be learnt.
    Dropped {
        /// Sender of an ARP frame, if this was one.
        arp_sender: Option<(Ipv4Addr, Mac)>,
    },
}

/// The port's own addresses, that frames are checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    /// This port's Ethernet address.
    pub mac: Mac,
    /// This port's IPv4 address and UDP port.
    pub addr: SocketAddrV4,
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

fn mac(bytes: &[u8]) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&bytes[..6]);
    Mac(m)
}

/// Classifies one received frame (no FCS) and counts it in `counters` unless it is a UDP
/// datagram for `local` or an ARP request to answer. Never panics, whatever the bytes.
pub fn parse(frame: &[u8], local: &Local, counters: &mut FrameCounters) -> Frame {
    let dropped = Frame::Dropped { arp_sender: None };
    if frame.len() < ETHERNET_BYTES {
        counters.bad_ethernet += 1;
        return dropped;
    }
    let dst = mac(&frame[field::ETH_DST]);
    let ethertype = be16(&frame[field::ETH_TYPE]);
    let body = &frame[ETHERNET_BYTES..];
    match ethertype {
        ETHERTYPE_ARP if dst == local.mac || dst == Mac::BROADCAST => {
            parse_arp(body, local, counters)
        }
        _ if dst != local.mac => {
            counters.other_mac += 1;
            dropped
        }
        ETHERTYPE_IPV4 => parse_udp(frame, local, counters),
        _ => {
            counters.other_ethertype += 1;
            dropped
        }
    }
}

fn parse_arp(arp: &[u8], local: &Local, counters: &mut FrameCounters) -> Frame {
    if arp.len() < ARP_BYTES || arp[field::ARP_FIXED] != ARP_FIXED_BYTES {
        counters.arp_other += 1;
        return Frame::Dropped { arp_sender: None };
    }
    let sender_mac = mac(&arp[field::ARP_SHA]);
    let sender_ip = ipv4(&arp[field::ARP_SPA]);
    let target_ip = ipv4(&arp[field::ARP_TPA]);
    let oper = be16(&arp[field::ARP_OPER]);
    if oper == ARP_REQUEST && target_ip == *local.addr.ip() {
        counters.arp_answered += 1;
        return Frame::ArpRequest { sender_mac, sender_ip };
    }
    counters.arp_other += 1;
    let learnable = matches!(oper, ARP_REQUEST | ARP_REPLY) && !sender_ip.is_unspecified();
    Frame::Dropped { arp_sender: learnable.then_some((sender_ip, sender_mac)) }
}

fn parse_udp(frame: &[u8], local: &Local, counters: &mut FrameCounters) -> Frame {
    let dropped = Frame::Dropped { arp_sender: None };
    let ip = &frame[ETHERNET_BYTES..];
    let ihl_bytes = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
    if ip.len() < IPV4_BYTES || ip[field::IP_VERSION_IHL] >> 4 != 4 || ihl_bytes < IPV4_BYTES {
        counters.bad_ipv4 += 1;
        return dropped;
    }
    let total = usize::from(be16(&ip[field::IP_TOTAL_LEN]));
    // Ethernet pads short frames: the IPv4 total length may be below the frame's, never above.
    if total < ihl_bytes || total > ip.len() || checksum(&ip[..ihl_bytes], 0) != 0 {
        counters.bad_ipv4 += 1;
        return dropped;
    }
    let ip = &ip[..total];
    let flags_fragment = be16(&ip[field::IP_FLAGS_FRAGMENT]);
    if flags_fragment & 0x3fff != 0 {
        // More-fragments set, or a fragment offset: a piece of a larger datagram.
        counters.fragments += 1;
        return dropped;
    }
    if ip[field::IP_PROTOCOL] != IP_PROTOCOL_UDP {
        counters.not_udp += 1;
        return dropped;
    }
    let udp = &ip[ihl_bytes..];
    if udp.len() < UDP_BYTES || usize::from(be16(&udp[field::UDP_LEN])) != udp.len() {
        counters.bad_udp += 1;
        return dropped;
    }
    let src_ip = ipv4(&ip[field::IP_SRC]);
    let dst_ip = ipv4(&ip[field::IP_DST]);
    let given = be16(&udp[field::UDP_CHECKSUM]);
    if given != 0 && udp_checksum(src_ip, dst_ip, udp) != 0 {
        counters.bad_udp += 1;
        return dropped;
    }
    let dst_port = be16(&udp[field::UDP_DST]);
    if dst_ip != *local.addr.ip() || dst_port != local.addr.port() {
        counters.other_address += 1;
        return dropped;
    }
    let start = ETHERNET_BYTES + ihl_bytes + UDP_BYTES;
    Frame::Udp {
        src_mac: mac(&frame[field::ETH_SRC]),
        src: SocketAddrV4::new(src_ip, be16(&udp[field::UDP_SRC])),
        payload: (start, ETHERNET_BYTES + total),
    }
}

/// The Internet checksum (RFC 1071) of `bytes` plus `initial` (a partial sum): 0 when a
/// header that carries its checksum is intact. Eight bytes at a time: a 32-bit big-endian
/// word is congruent to the sum of its two 16-bit halves modulo 0xffff, which is all the
/// folding below keeps.
pub fn checksum(bytes: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_be_bytes(word.try_into().expect("8 bytes"));
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut pairs = words.remainder().chunks_exact(2);
    for pair in &mut pairs {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: usize) -> u32 {
    let (s, d) = (src.octets(), dst.octets());
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(IP_PROTOCOL_UDP),
        udp_len as u16,
    ];
    words.iter().map(|&w| u32::from(w)).sum()
}

/// The UDP checksum over the pseudo-header and `udp` (header and payload, its checksum field
/// as it is): 0 when a received datagram's checksum is right.
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    checksum(udp, pseudo_header_sum(src, dst, udp.len()))
}

/// Writes Ethernet, IPv4 and UDP headers into `frame[..HEADERS_BYTES]` for the `payload_len`
/// bytes already at `frame[HEADERS_BYTES..]`, checksums included; returns the frame's length
/// (padded to [`FRAME_BYTES_MIN`], the padding zeroed). `frame` must hold the padded length.
pub fn write_udp(
    frame: &mut [u8],
    src: (Mac, SocketAddrV4),
    dst: (Mac, SocketAddrV4),
    payload_len: usize,
    ip_id: u16,
) -> usize {
    let udp_len = UDP_BYTES + payload_len;
    let ip_len = IPV4_BYTES + udp_len;
    assert!(ip_len <= usize::from(u16::MAX), "datagram of {payload_len} bytes");
    let len = (ETHERNET_BYTES + ip_len).max(FRAME_BYTES_MIN);
    frame[ETHERNET_BYTES + ip_len..len].fill(0);
    write_ethernet(frame, src.0, dst.0, ETHERTYPE_IPV4);
    let ip = &mut frame[ETHERNET_BYTES..ETHERNET_BYTES + ip_len];
    ip[field::IP_VERSION_IHL] = 0x45;
    ip[1] = 0;
    ip[field::IP_TOTAL_LEN].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[field::IP_FLAGS_FRAGMENT].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip[field::IP_TTL] = TTL;
    ip[field::IP_PROTOCOL] = IP_PROTOCOL_UDP;
    ip[field::IP_CHECKSUM].fill(0);
    ip[field::IP_SRC].copy_from_slice(&src.1.ip().octets());
    ip[field::IP_DST].copy_from_slice(&dst.1.ip().octets());
    let ip_checksum = checksum(&ip[..IPV4_BYTES], 0);
    ip[field::IP_CHECKSUM].copy_from_slice(&ip_checksum.to_be_bytes());
    let udp = &mut ip[IPV4_BYTES..];
    udp[field::UDP_SRC].copy_from_slice(&src.1.port().to_be_bytes());
    udp[field::UDP_DST].copy_from_slice(&dst.1.port().to_be_bytes());
    udp[field::UDP_LEN].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[field::UDP_CHECKSUM].fill(0);
    let sum = match udp_checksum(*src.1.ip(), *dst.1.ip(), udp) {
        0 => 0xffff, // 0 on the wire means "no checksum"
        sum => sum,
    };
    udp[field::UDP_CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    len
}

fn write_ethernet(frame: &mut [u8], src: Mac, dst: Mac, ethertype: u16) {
    frame[field::ETH_DST].copy_from_slice(&dst.0);
    frame[field::ETH_SRC].copy_from_slice(&src.0);
    frame[field::ETH_TYPE].copy_from_slice(&ethertype.to_be_bytes());
}

fn write_arp(frame: &mut [u8], oper: u16, sender: (Mac, Ipv4Addr), target: (Mac, Ipv4Addr)) {
    let arp = &mut frame[ETHERNET_BYTES..ETHERNET_BYTES + ARP_BYTES];
    arp[field::ARP_FIXED].copy_from_slice(&ARP_FIXED_BYTES);
    arp[field::ARP_OPER].copy_from_slice(&oper.to_be_bytes());
    arp[field::ARP_SHA].copy_from_slice(&sender.0 .0);
    arp[field::ARP_SPA].copy_from_slice(&sender.1.octets());
    arp[field::ARP_THA].copy_from_slice(&target.0 .0);
    arp[field::ARP_TPA].copy_from_slice(&target.1.octets());
    frame[ETHERNET_BYTES + ARP_BYTES..FRAME_BYTES_MIN].fill(0);
}

/// Writes the ARP reply to a request from `asker` into `frame` (at least
/// [`FRAME_BYTES_MIN`] bytes); returns its length.
pub fn write_arp_reply(frame: &mut [u8], local: &Local, asker: (Mac, Ipv4Addr)) -> usize {
    write_ethernet(frame, local.mac, asker.0, ETHERTYPE_ARP);
    write_arp(frame, ARP_REPLY, (local.mac, *local.addr.ip()), asker);
    FRAME_BYTES_MIN
}

/// Writes a broadcast ARP request for `target` into `frame` (at least [`FRAME_BYTES_MIN`]
/// bytes); returns its length.
pub fn write_arp_request(frame: &mut [u8], local: &Local, target: Ipv4Addr) -> usize {
    write_ethernet(frame, local.mac, Mac::BROADCAST, ETHERTYPE_ARP);
    write_arp(frame, ARP_REQUEST, (local.mac, *local.addr.ip()), (Mac::default(), target));
    FRAME_BYTES_MIN
}

/// Slots of a [`Neighbours`] table.
pub const NEIGHBOURS_MAX: usize = 256;

/// IPv4 → Ethernet address, learnt from what arrives: a direct-mapped table of
/// [`NEIGHBOURS_MAX`] slots, a newcomer evicting whoever shared its slot (who is then asked
/// for again by ARP when next sent to). Allocated once.
#[derive(Clone, Debug)]
pub struct Neighbours {
    slots: Box<[(Ipv4Addr, Mac)]>,
}

impl Default for Neighbours {
    fn default() -> Neighbours {
        Neighbours { slots: vec![(Ipv4Addr::UNSPECIFIED, Mac::default()); NEIGHBOURS_MAX].into() }
    }
}

impl Neighbours {
    fn slot(ip: Ipv4Addr) -> usize {
        let x = u32::from(ip).wrapping_mul(0x9e37_79b1);
        (x >> 24) as usize % NEIGHBOURS_MAX
    }

    /// Remembers that `ip` is at `mac`.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: Mac) {
        let slot = &mut self.slots[Self::slot(ip)];
        if *slot != (ip, mac) {
            *slot = (ip, mac);
        }
    }

    /// Where `ip` is, if known.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<Mac> {
        let (known, mac) = self.slots[Self::slot(ip)];
        (known == ip && !ip.is_unspecified()).then_some(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn local() -> Local {
        Local { mac: A, addr: "127.0.0.1:7000".parse().unwrap() }
    }

    fn datagram_to_local(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0; HEADERS_BYTES + payload.len() + FRAME_BYTES_MIN];
        frame[HEADERS_BYTES..HEADERS_BYTES + payload.len()].copy_from_slice(payload);
        let len = write_udp(
            &mut frame,
            (B, "127.0.0.2:5000".parse().unwrap()),
            (A, local().addr),
            payload.len(),
            7,
        );
        frame.truncate(len);
        frame
    }

    #[test]
    fn a_built_datagram_parses_back_to_its_payload() {
        for size in [0usize, 1, 17, 18, 32, 1472] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let frame = datagram_to_local(&payload);
            assert!(frame.len() >= FRAME_BYTES_MIN);
            let mut counters = FrameCounters::default();
            let Frame::Udp { src_mac, src, payload: (start, end) } =
                parse(&frame, &local(), &mut counters)
            else {
                panic!("size {size}: {counters:?}")
            };
            assert_eq!((src_mac, src), (B, "127.0.0.2:5000".parse().unwrap()));
            assert_eq!(&frame[start..end], &payload[..], "size {size}, padding excluded");
            assert_eq!(counters, FrameCounters::default());
        }
    }

    #[test]
    fn each_kind_of_bad_frame_is_counted_by_its_reason() {
        let good = datagram_to_local(b"hello cradle");
        type Reason = fn(&FrameCounters) -> u64;
        let mut cases: Vec<(Vec<u8>, Reason)> = Vec::new();
        cases.push((good[..10].to_vec(), |c| c.bad_ethernet));
        let mut f = good.clone();
        f[0] ^= 1;
        cases.push((f, |c| c.other_mac));
        let mut f = good.clone();
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        cases.push((f, |c| c.other_ethertype));
        let mut f = good.clone();
        f[14] = 0x65; // version 6
        cases.push((f, |c| c.bad_ipv4));
        let mut f = good.clone();
        f[16..18].copy_from_slice(&2000u16.to_be_bytes()); // total length past the frame
        cases.push((f, |c| c.bad_ipv4));
        let mut f = good.clone();
        f[24] ^= 0x40; // IPv4 header checksum
        cases.push((f, |c| c.bad_ipv4));
        let mut f = good.clone();
        f[20] = 0x20; // more fragments (checksum fixed below)
        cases.push((f, |c| c.fragments));
        let mut f = good.clone();
        f[23] = 6; // TCP
        cases.push((f, |c| c.not_udp));
        let mut f = good.clone();
        f[38..40].copy_from_slice(&9u16.to_be_bytes()); // UDP length
        cases.push((f, |c| c.bad_udp));
        let mut f = good.clone();
        f[HEADERS_BYTES] ^= 0xff; // payload byte: the UDP checksum no longer matches
        cases.push((f, |c| c.bad_udp));
        let mut f = good.clone();
        f[36..38].copy_from_slice(&7001u16.to_be_bytes()); // another port
        f[40..42].fill(0); // no UDP checksum, so the port is what is wrong
        cases.push((f, |c| c.other_address));
        for (i, (mut frame, which)) in cases.into_iter().enumerate() {
            if frame.len() >= HEADERS_BYTES && i != 5 {
                // Keep the IPv4 checksum right so each case fails for its own reason only.
                frame[24..26].fill(0);
                let sum = checksum(&frame[14..34], 0);
                frame[24..26].copy_from_slice(&sum.to_be_bytes());
            }
            let mut counters = FrameCounters::default();
            let got = parse(&frame, &local(), &mut counters);
            assert_eq!(got, Frame::Dropped { arp_sender: None }, "case {i}");
            assert_eq!(which(&counters), 1, "case {i}: {counters:?}");
            assert_eq!(counters.dropped(), 1, "case {i}: counted once");
        }
    }

    #[test]
    fn arp_requests_for_us_are_answered_and_others_learnt() {
        let asker = Local { mac: B, addr: "127.0.0.2:0".parse().unwrap() };
        let mut frame = [0u8; FRAME_BYTES_MIN];
        write_arp_request(&mut frame, &asker, *local().addr.ip());
        let mut counters = FrameCounters::default();
        let got = parse(&frame, &local(), &mut counters);
        assert_eq!(got, Frame::ArpRequest { sender_mac: B, sender_ip: *asker.addr.ip() });
        let mut reply = [0u8; FRAME_BYTES_MIN];
        write_arp_reply(&mut reply, &local(), (B, *asker.addr.ip()));
        let got = parse(&reply, &asker, &mut counters);
        assert_eq!(got, Frame::Dropped { arp_sender: Some((*local().addr.ip(), A)) });
        assert_eq!((counters.arp_answered, counters.arp_other), (1, 1));
        write_arp_request(&mut frame, &asker, "127.0.0.9".parse().unwrap());
        assert!(matches!(parse(&frame, &local(), &mut counters), Frame::Dropped { .. }));
    }

    #[test]
    fn random_bytes_never_panic_and_are_counted() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let good = datagram_to_local(&[7; 40]);
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut frame = good.clone();
            frame.truncate((x as usize) % (good.len() + 1));
            if let Some(byte) = frame.get_mut((x >> 20) as usize % good.len()) {
                *byte ^= (x >> 40) as u8 | 1;
            }
            let mut counters = FrameCounters::default();
            let got = parse(&frame, &local(), &mut counters);
            let counted = counters.dropped() + counters.arp_answered;
            assert!(matches!(got, Frame::Udp { .. }) || counted == 1, "round {round}");
        }
    }

    /// RFC 1071 word by word, as the reference.
    fn checksum_by_words(bytes: &[u8], initial: u32) -> u16 {
        let mut sum = u64::from(initial);
        for pair in bytes.chunks(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn checksum_matches_rfc1071() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its
        // complement.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&bytes, 0), !0xddf2);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Runs of 0xff and 0x00 too, where carries and the zero sum hide.
                    match x % 4 {
                        0 => 0xff,
                        1 => 0,
                        _ => x as u8,
                    }
                })
                .collect();
            let initial = (x >> 40) as u32 & 0x3ffff;
            assert_eq!(checksum(&bytes, initial), checksum_by_words(&bytes, initial), "{len}");
            assert_eq!(checksum(&bytes, 0), checksum_by_words(&bytes, 0), "{len}");
        }
    }

    #[test]
    fn neighbours_learn_and_evict() {
        let mut n = Neighbours::default();
        let ip: Ipv4Addr = "127.0.0.2".parse().unwrap();
        assert_eq!(n.lookup(ip), None);
        n.learn(ip, B);
        assert_eq!(n.lookup(ip), Some(B));
        assert_eq!(n.lookup(Ipv4Addr::UNSPECIFIED), None);
    }
}
