//! Authenticated client datagrams: an envelope around an ordinary datagram of messages, and
//! the key file that names clients, their secrets and their roles (`docs/OPERATIONS.md`).
//!
//! Layout, little-endian:
//!
//! ```text
//! 0   u16  magic 0x4163 ("cA"; an unauthenticated datagram starts with "cR")
//! 2   u8   version 1
//! 3   u8   reserved, 0
//! 4   u32  key id (a line of the node's key file)
//! 8   u64  sent at (the sender's wall clock, ns since the Unix epoch)
//! 16  ..   the messages, exactly as an unauthenticated datagram carries them
//! end 16   MAC: BLAKE3 keyed with the client's key over everything before it, first 16 bytes
//! ```
//!
//! The MAC covers every byte a receiver acts on (each message's header, token included, key
//! and value), so no field can be changed, nor a message added, dropped or moved to another
//! datagram, without the key. It is the node-to-node envelope's MAC (`control::peer`, the
//! same function, `mac16`), keyed per client; a replay is bounded by the send time (see
//! `control::auth`) and made harmless by the completion records. Replies are not sealed.

/// The first two bytes of an authenticated datagram (little-endian).
pub const AUTH_MAGIC: u16 = 0x4163;
const AUTH_VERSION: u8 = 1;
/// Bytes before the messages.
pub const AUTH_HEADER_BYTES: usize = 16;
/// Bytes of the MAC.
pub const AUTH_MAC_BYTES: usize = 16;
/// What sealing adds to a datagram.
pub const AUTH_OVERHEAD_BYTES: usize = AUTH_HEADER_BYTES + AUTH_MAC_BYTES;

mod field {
    use core::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..2;
    pub(super) const VERSION: usize = 2;
    pub(super) const RESERVED: usize = 3;
    pub(super) const KEY_ID: Range<usize> = 4..8;
    pub(super) const SENT_AT: Range<usize> = 8..16;
}

/// The first 16 bytes of BLAKE3 keyed with `key` over `bytes`: the MAC of both envelopes.
pub fn mac16(key: &[u8; 32], bytes: &[u8]) -> [u8; 16] {
    let hash = blake3::keyed_hash(key, bytes);
    let mut mac = [0; 16];
    mac.copy_from_slice(&hash.as_bytes()[..16]);
    mac
}

/// Whether two MACs are equal, in time that does not depend on where they differ.
pub fn macs_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a key lets its holder do (the node decides what each role may ask: `control::auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: GET, CHUNK, PING, MAP, STATS.
    Read,
    /// Reads and writes: also PUT, DELETE, CAS, INCR, TOUCH.
    Write,
    /// Everything: also SCAN (listing and exporting whole partitions).
    Admin,
}

impl Role {
    /// The role named `name` in a key file (`read`, `write`, `admin`).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Its name in a key file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// A client's secret as the MAC uses it: derived from the key file's 32 bytes, so a key
/// file's bytes are never used as a key of anything else.
#[derive(Clone)]
pub struct ClientSecret([u8; 32]);

impl core::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientSecret(..)") // never print a secret
    }
}

impl ClientSecret {
    /// The secret of a key file line's 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> ClientSecret {
        ClientSecret(blake3::derive_key("cradle 2026 client key v1", bytes))
    }

    fn mac(&self, bytes: &[u8]) -> [u8; AUTH_MAC_BYTES] {
        mac16(&self.0, bytes)
    }
}

/// One line of a key file: `ID NAME ROLE SECRET` (SECRET: 64 hex digits, 32 bytes).
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The key id datagrams name.
    pub id: u32,
    /// Who holds it (for the operator: logs, metrics).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Its secret.
    pub secret: ClientSecret,
}

/// Parses a key file: one `ID NAME ROLE SECRET` line per key, blank lines and `#` comments
/// ignored; ids unique. Errors name the line.
pub fn parse_key_file(text: &str) -> Result<Vec<KeyEntry>, String> {
    let mut entries: Vec<KeyEntry> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let entry = parse_key_line(line).map_err(|why| format!("line {}: {why}", index + 1))?;
        if entries.iter().any(|e| e.id == entry.id) {
            return Err(format!("line {}: key id {} given twice", index + 1, entry.id));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_key_line(line: &str) -> Result<KeyEntry, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [id, name, role, secret] = words[..] else {
        return Err(format!("expected `ID NAME ROLE SECRET`, found {} words", words.len()));
    };
    let id = id.parse().map_err(|_| format!("key id {id:?} is not a number up to 2^32-1"))?;
    let role = Role::parse(role)
        .ok_or_else(|| format!("role {role:?} is not one of read, write, admin"))?;
    let bytes = decode_hex_32(secret)
        .ok_or("the secret must be 64 hex digits (32 bytes; `cradle keygen` makes one)")?;
    Ok(KeyEntry { id, name: name.to_string(), role, secret: ClientSecret::from_bytes(&bytes) })
}

fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = core::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Writes `messages` sealed with key `key_id` at wall-clock `sent_at_ns` into `out`.
pub fn seal(
    key_id: u32,
    secret: &ClientSecret,
    sent_at_ns: u64,
    messages: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&AUTH_MAGIC.to_le_bytes());
    out.extend_from_slice(&[AUTH_VERSION, 0]);
    out.extend_from_slice(&key_id.to_le_bytes());
    out.extend_from_slice(&sent_at_ns.to_le_bytes());
    out.extend_from_slice(messages);
    let mac = secret.mac(out);
    out.extend_from_slice(&mac);
}

/// Whether `datagram` claims to be sealed (its magic; nothing is checked).
pub fn is_sealed(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[field::MAGIC] == AUTH_MAGIC.to_le_bytes()
}

/// A checked view of a sealed datagram's envelope; its MAC is not checked until `verify`.
#[derive(Clone, Copy, Debug)]
pub struct Sealed<'a> {
    body: &'a [u8],
    mac: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// The envelope of `datagram`, if it is one of this version, whole.
    pub fn parse(datagram: &'a [u8]) -> Option<Sealed<'a>> {
        let body_len = datagram.len().checked_sub(AUTH_MAC_BYTES)?;
        let (body, mac) = datagram.split_at(body_len);
        let whole = body.len() >= AUTH_HEADER_BYTES
            && body[field::MAGIC] == AUTH_MAGIC.to_le_bytes()
            && body[field::VERSION] == AUTH_VERSION
            && body[field::RESERVED] == 0;
        whole.then_some(Sealed { body, mac })
    }

    /// The key id it names (not yet believed).
    pub fn key_id(&self) -> u32 {
        u32::from_le_bytes(self.body[field::KEY_ID].try_into().expect("4 bytes"))
    }

    /// The send time it names (believed only after `verify`).
    pub fn sent_at_ns(&self) -> u64 {
        u64::from_le_bytes(self.body[field::SENT_AT].try_into().expect("8 bytes"))
    }

    /// The messages (believed only after `verify`).
    pub fn messages(&self) -> &'a [u8] {
        &self.body[AUTH_HEADER_BYTES..]
    }

    /// Whether the MAC is `secret`'s over the whole envelope.
    pub fn verify(&self, secret: &ClientSecret) -> bool {
        macs_equal(&secret.mac(self.body), self.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_sealed_datagram_verifies_and_every_changed_bit_does_not() {
        let entry = &parse_key_file(&format!("7 app write {SECRET}\n")).unwrap()[0];
        let mut sealed = Vec::new();
        seal(7, &entry.secret, 1234, b"messages", &mut sealed);
        assert_eq!(sealed.len(), 8 + AUTH_OVERHEAD_BYTES);
        assert!(is_sealed(&sealed));
        let view = Sealed::parse(&sealed).unwrap();
        assert_eq!(
            (view.key_id(), view.sent_at_ns(), view.messages()),
            (7, 1234, &b"messages"[..])
        );
        assert!(view.verify(&entry.secret));
        for bit in 0..sealed.len() * 8 {
            let mut forged = sealed.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            assert!(!Sealed::parse(&forged).is_some_and(|v| v.verify(&entry.secret)), "bit {bit}");
        }
        let other = ClientSecret::from_bytes(&[9; 32]);
        assert!(!view.verify(&other), "another key");
        assert!(Sealed::parse(&sealed[..AUTH_OVERHEAD_BYTES - 1]).is_none(), "cut short");
        assert!(!is_sealed(&[0x63, 0x52]), "a plain datagram");
    }

    proptest::proptest! {
        /// Sealing then parsing gives back what was sealed, and the MAC holds.
        #[test]
        fn seal_and_parse_round_trip(
            key_id: u32,
            sent_at: u64,
            secret: [u8; 32],
            messages in proptest::collection::vec(proptest::num::u8::ANY, 0..1500),
        ) {
            let secret = ClientSecret::from_bytes(&secret);
            let mut sealed = Vec::new();
            seal(key_id, &secret, sent_at, &messages, &mut sealed);
            let view = Sealed::parse(&sealed).unwrap();
            proptest::prop_assert_eq!(view.key_id(), key_id);
            proptest::prop_assert_eq!(view.sent_at_ns(), sent_at);
            proptest::prop_assert_eq!(view.messages(), &messages[..]);
            proptest::prop_assert!(view.verify(&secret));
        }
    }

    #[test]
    fn key_files_are_parsed_with_errors_naming_the_line() {
        let text = format!("# clients\n\n1 bidder read {SECRET}\n2 ops admin {SECRET} # rotated\n");
        let entries = parse_key_file(&text).unwrap();
        let summary: Vec<_> = entries.iter().map(|e| (e.id, e.name.as_str(), e.role)).collect();
        assert_eq!(summary, [(1, "bidder", Role::Read), (2, "ops", Role::Admin)]);
        let bad = |text: &str, why: &str| {
            let error = parse_key_file(text).unwrap_err();
            assert!(error.contains(why), "{text:?}: {error}");
        };
        bad(&format!("\n1 a root {SECRET}"), "line 2: role \"root\"");
        bad("1 a read 0011", "64 hex digits");
        bad(&format!("x a read {SECRET}"), "key id");
        bad("1 a read", "found 3 words");
        bad(&format!("1 a read {SECRET}\n1 b write {SECRET}"), "line 2: key id 1 given twice");
        assert_eq!(Role::parse(Role::Write.name()), Some(Role::Write));
    }
}
