//! Who may talk to a node: the key table (`--auth-keys FILE`), the check of a client
//! datagram's envelope (`proto::auth`) before any of its messages is parsed, and what each
//! role may ask. `Core::handle_requests` calls `admit` first and `permits` per message.
//!
//! Off (no table): every datagram is served as before, with every right; a sealed one is
//! unwrapped without its MAC being checked (there is no key to check it with), so clients can
//! be given keys before their nodes require them.
//!
//! On: a datagram is served only if it is sealed with a key of the table, its MAC holds and it
//! was sent within `AUTH_FRESHNESS_NS` of the node's wall clock. What is refused gets one bare
//! UNAUTHENTICATED header for its first request (`Core::refuse_unauthenticated`), never more
//! bytes than it carried.
//!
//! Replays. The MAC covers every byte of every message, so a captured datagram can only be
//! sent again as it is, from any address. A resent write is answered from its completion
//! record, never applied twice, for at least `completion_ttl` after it was applied. A
//! datagram sent at `s` (its sealed time) is accepted only while the node's clock reads within
//! `s ± AUTH_FRESHNESS_NS`, a span of twice that; its write, applied no earlier than the first
//! acceptance, keeps its record past the last acceptance as long as `completion_ttl > 2 ×
//! AUTH_FRESHNESS_NS` (checked by `CoreConfig::validate`), whatever the client's clock says.
//! A replayed read is answered again (to whoever sent the copy: replies are not secret).

use proto::auth::{parse_key_file, ClientSecret, Role, Sealed};
use proto::Opcode;

/// How far a sealed datagram's send time may be from the node's wall clock: clients' clocks
/// must be this close to the node's (less the network's delay), e.g. by NTP.
pub const AUTH_FRESHNESS_NS: u64 = 2_000_000_000;

/// One client key.
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// Its id in the key file and in sealed datagrams.
    pub id: u32,
    /// Who holds it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    secret: ClientSecret,
}

/// The keys a node accepts, by id.
#[derive(Clone, Debug, Default)]
pub struct KeyTable {
    /// Sorted by id.
    keys: Vec<ClientKey>,
}

impl KeyTable {
    /// The table of a key file's text (`proto::auth::parse_key_file`); at least one key.
    pub fn parse(text: &str) -> Result<KeyTable, String> {
        let mut keys: Vec<ClientKey> = parse_key_file(text)?
            .into_iter()
            .map(|e| ClientKey { id: e.id, name: e.name, role: e.role, secret: e.secret })
            .collect();
        if keys.is_empty() {
            return Err("the key file names no key".into());
        }
        keys.sort_by_key(|k| k.id);
        Ok(KeyTable { keys })
    }

    /// Reads and parses the key file at `path`.
    pub fn load(path: &std::path::Path) -> Result<KeyTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        KeyTable::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
    }

    /// The key with id `id`.
    pub fn get(&self, id: u32) -> Option<&ClientKey> {
        self.keys.binary_search_by_key(&id, |k| k.id).ok().map(|at| &self.keys[at])
    }

    /// Keys in the table.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no key (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why a datagram was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not sealed (a plain datagram), or an envelope cut short.
    NotSealed,
    /// Sealed with a key id the table does not hold.
    UnknownKey,
    /// The MAC does not match: forged, changed on the way, or another key's.
    BadMac,
    /// Sent too far from the node's clock: a late replay, or a client whose clock is off.
    Stale,
}

/// A datagram let in: the messages to serve and the role they are served with.
#[derive(Clone, Copy, Debug)]
pub struct Admitted<'a> {
    /// The datagram's messages.
    pub messages: &'a [u8],
    /// What they may do.
    pub role: Role,
}

/// Checks `datagram` at wall-clock `wall_ns` against `table` (none: auth is off).
pub fn admit<'a>(
    table: Option<&KeyTable>,
    wall_ns: u64,
    datagram: &'a [u8],
) -> Result<Admitted<'a>, Refusal> {
    let sealed = proto::auth::is_sealed(datagram).then(|| Sealed::parse(datagram));
    let Some(table) = table else {
        return match sealed {
            None => Ok(Admitted { messages: datagram, role: Role::Admin }),
            Some(Some(s)) => Ok(Admitted { messages: s.messages(), role: Role::Admin }),
            Some(None) => Err(Refusal::NotSealed),
        };
    };
    let sealed = sealed.flatten().ok_or(Refusal::NotSealed)?;
    let key = table.get(sealed.key_id()).ok_or(Refusal::UnknownKey)?;
    if !sealed.verify(&key.secret) {
        return Err(Refusal::BadMac);
    }
    if wall_ns.abs_diff(sealed.sent_at_ns()) > AUTH_FRESHNESS_NS {
        return Err(Refusal::Stale);
    }
    Ok(Admitted { messages: sealed.messages(), role: key.role })
}

/// Whether `role` may ask for `opcode`. Admin requests are those that read or change more
/// than one key at a time: SCAN (listing, `cradle export`). Drain and class changes have no
/// request of the wire protocol yet; they will be admin when they get one.
pub fn permits(role: Role, opcode: Opcode) -> bool {
    let needed = match opcode {
        Opcode::Get | Opcode::Chunk | Opcode::Ping | Opcode::Map | Opcode::Stats => Role::Read,
        Opcode::Put | Opcode::Delete | Opcode::Cas | Opcode::Incr | Opcode::Touch => Role::Write,
        Opcode::Scan => Role::Admin,
    };
    role >= needed
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000_000_000;
    const SECRET_A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const SECRET_B: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    fn table() -> KeyTable {
        KeyTable::parse(&format!("1 reader read {SECRET_A}\n2 ops admin {SECRET_B}\n")).unwrap()
    }

    fn sealed(id: u32, secret: &str, at: u64) -> Vec<u8> {
        let entry = &parse_key_file(&format!("{id} x read {secret}")).unwrap()[0];
        let mut out = Vec::new();
        proto::auth::seal(id, &entry.secret, at, b"msgs", &mut out);
        out
    }

    #[test]
    fn only_a_fresh_datagram_with_the_right_mac_is_admitted_with_its_keys_role() {
        let table = table();
        let datagram = sealed(2, SECRET_B, T - AUTH_FRESHNESS_NS);
        let ok = admit(Some(&table), T, &datagram).unwrap();
        assert_eq!((ok.messages, ok.role), (&b"msgs"[..], Role::Admin));
        let datagram = sealed(1, SECRET_A, T + 5);
        assert_eq!(admit(Some(&table), T, &datagram).unwrap().role, Role::Read);
        let refused = |d: &[u8]| admit(Some(&table), T, d).unwrap_err();
        assert_eq!(refused(b"plain datagram"), Refusal::NotSealed);
        assert_eq!(refused(&sealed(3, SECRET_A, T)), Refusal::UnknownKey);
        assert_eq!(refused(&sealed(1, SECRET_B, T)), Refusal::BadMac, "another key's secret");
        let mut tampered = sealed(1, SECRET_A, T);
        tampered[17] ^= 1;
        assert_eq!(refused(&tampered), Refusal::BadMac);
        assert_eq!(refused(&sealed(1, SECRET_A, T - AUTH_FRESHNESS_NS - 1)), Refusal::Stale);
        assert_eq!(refused(&sealed(1, SECRET_A, T + AUTH_FRESHNESS_NS + 1)), Refusal::Stale);
        assert_eq!(refused(&sealed(1, SECRET_A, T)[..20]), Refusal::NotSealed, "cut short");
    }

    #[test]
    fn without_a_table_everything_is_served_and_envelopes_are_unwrapped() {
        let plain = admit(None, T, b"plain").unwrap();
        assert_eq!((plain.messages, plain.role), (&b"plain"[..], Role::Admin));
        let datagram = sealed(9, SECRET_A, 0);
        assert_eq!(admit(None, T, &datagram).unwrap().messages, b"msgs");
    }

    #[test]
    fn roles_nest_and_scan_is_admin_only() {
        assert!(permits(Role::Read, Opcode::Get) && permits(Role::Read, Opcode::Stats));
        assert!(!permits(Role::Read, Opcode::Put) && !permits(Role::Read, Opcode::Incr));
        assert!(permits(Role::Write, Opcode::Put) && permits(Role::Write, Opcode::Get));
        assert!(!permits(Role::Write, Opcode::Scan));
        assert!(Opcode::ALL.iter().all(|&op| permits(Role::Admin, op)));
        assert!(KeyTable::parse("# nothing\n").unwrap_err().contains("no key"));
        assert_eq!(table().get(2).map(|k| k.name.as_str()), Some("ops"));
        assert!(table().get(3).is_none());
    }
}
