//! A client key (`ClientConfig::key`) and the sealing of every datagram the drivers send
//! (`proto::auth`): the engine stays without a clock, the drivers seal at the moment they send.

use proto::auth::{parse_key_file, seal, ClientSecret, AUTH_OVERHEAD_BYTES};
use proto::DATAGRAM_BYTES_MAX;
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// The key a client seals its requests with: one line of the node's key file (`ID NAME ROLE
/// SECRET`). What it may do is the node's business (the role in the node's file).
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// The key's id.
    pub id: u32,
    secret: ClientSecret,
}

impl ClientKey {
    /// The key of a key file's text holding exactly one `ID NAME ROLE SECRET` line.
    pub fn parse(text: &str) -> Result<ClientKey, String> {
        let mut entries = parse_key_file(text)?;
        if entries.len() != 1 {
            return Err(format!(
                "a client's key file holds one key, this one {}: give the client its own line",
                entries.len()
            ));
        }
        let entry = entries.remove(0);
        Ok(ClientKey { id: entry.id, secret: entry.secret })
    }

    /// Reads and parses the key file at `path`.
    pub fn load(path: &std::path::Path) -> Result<ClientKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        ClientKey::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
    }

    /// `datagram` sealed with this key at wall-clock `sent_at_ns`.
    pub fn seal_at(&self, sent_at_ns: u64, datagram: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(datagram.len() + AUTH_OVERHEAD_BYTES);
        seal(self.id, &self.secret, sent_at_ns, datagram, &mut out);
        out
    }
}

/// `datagram` as it leaves: sealed now with `key`, or as it is without one.
pub(crate) fn sealed<'a>(key: Option<&ClientKey>, datagram: &'a [u8]) -> Cow<'a, [u8]> {
    match key {
        None => Cow::Borrowed(datagram),
        Some(key) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            Cow::Owned(key.seal_at(now.as_nanos() as u64, datagram))
        }
    }
}

/// Bytes of messages one datagram may carry, so that it stays within `DATAGRAM_BYTES_MAX`
/// once sealed (or not).
pub(crate) fn message_bytes_max(key: Option<&ClientKey>) -> usize {
    DATAGRAM_BYTES_MAX - if key.is_some() { AUTH_OVERHEAD_BYTES } else { 0 }
}
