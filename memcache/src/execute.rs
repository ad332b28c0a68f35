//! One key's part of a command, run on the core that owns the key: memcached's semantics on
//! top of the core's item calls. Each core is one thread, so a read-modify-write (append,
//! incr, replace) is atomic without a lock.

use crate::counters::Counters;
use crate::parse::StoreMode;
use control::{counter, Core, ItemPut, ItemSlot};
use std::io::Write;
use storage::{Meta, StoreError};

/// memcached's exptime boundary: larger values are absolute Unix times.
pub const RELATIVE_EXPTIME_MAX_S: i64 = 30 * 24 * 3600;

/// What to do with one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// get/gets/gat/gats for one key: the VALUE block or nothing.
    Get { cas: bool, touch: Option<i64> },
    /// A storage command.
    Store { mode: StoreMode, flags: u32, exptime: i64, cas: u64 },
    /// delete.
    Delete,
    /// incr/decr.
    Arith { delta: u64, decr: bool },
    /// touch.
    Touch { exptime: i64 },
    /// flush_all: every key of the core.
    Clear,
}

/// One key's work, borrowing the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job<'a> {
    pub(crate) key: &'a [u8],
    /// The data block of a storage command (else empty).
    pub(crate) value: &'a [u8],
    pub(crate) op: Op,
    pub(crate) noreply: bool,
}

/// A job that travels to another core.
#[derive(Debug)]
pub(crate) struct OwnedJob {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) op: Op,
    pub(crate) noreply: bool,
}

impl OwnedJob {
    pub(crate) fn of(job: &Job<'_>) -> OwnedJob {
        OwnedJob {
            key: job.key.to_vec(),
            value: job.value.to_vec(),
            op: job.op,
            noreply: job.noreply,
        }
    }

    pub(crate) fn as_job(&self) -> Job<'_> {
        Job { key: &self.key, value: &self.value, op: self.op, noreply: self.noreply }
    }
}

/// The wall-clock time from which a value stored with memcached's `exptime` reads as absent,
/// as `storage::Meta::expires_at_ns`: 0 never; negative: already expired; up to 30 days:
/// seconds from now; beyond: an absolute Unix time in seconds (in the past: expired).
pub fn expires_at_ns(exptime: i64, now_ns: u64) -> u64 {
    const NS: u64 = 1_000_000_000;
    match exptime {
        0 => 0,
        e if e < 0 => 1,
        e if e <= RELATIVE_EXPTIME_MAX_S => now_ns.saturating_add(e as u64 * NS),
        e => (e as u64).saturating_mul(NS),
    }
}

/// Writes to a replicated endpoint (a cluster) are not taken by the door yet.
const NOT_REPLICATED: &[u8] =
    b"SERVER_ERROR writes through the memcache door are not replicated yet: use cradle's protocol\r\n";

/// The reply line for a store error.
pub(crate) fn store_error(error: StoreError) -> &'static [u8] {
    match error {
        StoreError::NoSpace => b"SERVER_ERROR out of memory storing object\r\n",
        StoreError::Poisoned => b"SERVER_ERROR the key's store stopped after a disk error\r\n",
        StoreError::Quarantined => b"SERVER_ERROR the key's store is quarantined (corrupt)\r\n",
        StoreError::Exhausted(_) => {
            b"SERVER_ERROR busy: the server ran out of open files or memory maps, try again\r\n"
        }
    }
}

/// A read a replicated primary cannot answer now (lease, promotion, uncommitted writes).
const NOT_SERVING: &[u8] = b"SERVER_ERROR busy: the partition is changing hands, try again\r\n";

/// Runs `job` on this core (which owns the key, at `slot`), appending its reply to `out`.
/// Returns the slot when the job wrote and the reply must wait for the group commit.
pub(crate) fn execute(
    core: &mut Core,
    slot: ItemSlot,
    job: &Job<'_>,
    counters: &mut Counters,
    out: &mut Vec<u8>,
) -> Option<ItemSlot> {
    let start = out.len();
    let writes = !matches!(job.op, Op::Get { touch: None, .. });
    if writes && !core.item_writable(slot) {
        out.extend_from_slice(NOT_REPLICATED);
        return None;
    }
    if !writes && !core.item_readable(slot) {
        // A replicated primary that may not serve yet, or with writes still uncommitted.
        out.extend_from_slice(NOT_SERVING);
        return None;
    }
    let wrote = match job.op {
        Op::Get { cas, touch } => get(core, slot, job.key, cas, touch, counters, out),
        Op::Store { mode, flags, exptime, cas } => {
            store(core, slot, job, (mode, flags, exptime, cas), counters, out)
        }
        Op::Delete => {
            let outcome = core.item_delete(slot, job.key);
            let hit = matches!(outcome, Ok(true));
            counters.delete_hits += u64::from(hit);
            counters.delete_misses += u64::from(matches!(outcome, Ok(false)));
            reply(
                out,
                outcome.map(|found| if found { &b"DELETED\r\n"[..] } else { b"NOT_FOUND\r\n" }),
            );
            hit
        }
        Op::Arith { delta, decr } => arith(core, slot, job.key, delta, decr, counters, out),
        Op::Touch { exptime } => {
            counters.cmd_touch += 1;
            let outcome = touch(core, slot, job.key, exptime);
            let hit = matches!(outcome, Ok(Some(_)));
            counters.touch_hits += u64::from(hit);
            counters.touch_misses += u64::from(!hit);
            reply(
                out,
                outcome.map(|v| if v.is_some() { &b"TOUCHED\r\n"[..] } else { b"NOT_FOUND\r\n" }),
            );
            hit
        }
        Op::Clear => unreachable!("flush_all is run by the door on every core, not per key"),
    };
    if job.noreply && !out[start..].starts_with(b"SERVER_ERROR") {
        out.truncate(start);
    }
    (wrote && core.item_settled(slot).is_none()).then_some(slot)
}

fn reply(out: &mut Vec<u8>, outcome: Result<&'static [u8], StoreError>) {
    out.extend_from_slice(outcome.unwrap_or_else(store_error));
}

/// Appends the VALUE block of `key` if it is there (after touching it, for gat).
fn get(
    core: &mut Core,
    slot: ItemSlot,
    key: &[u8],
    cas: bool,
    touch_exptime: Option<i64>,
    counters: &mut Counters,
    out: &mut Vec<u8>,
) -> bool {
    counters.cmd_get += 1;
    let mut wrote = false;
    if let Some(exptime) = touch_exptime {
        counters.cmd_touch += 1;
        match touch(core, slot, key, exptime) {
            Ok(Some(_)) => {
                counters.touch_hits += 1;
                wrote = true;
            }
            Ok(None) => counters.touch_misses += 1,
            Err(error) => {
                out.extend_from_slice(store_error(error));
                return false;
            }
        }
    }
    match core.item_get(slot, key) {
        Ok(Some(item)) => {
            counters.get_hits += 1;
            out.extend_from_slice(b"VALUE ");
            out.extend_from_slice(key);
            let _ = write!(out, " {} {}", item.meta.flags, item.value.len());
            if cas {
                let _ = write!(out, " {}", item.version);
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(item.value);
            out.extend_from_slice(b"\r\n");
        }
        Ok(None) => counters.get_misses += 1,
        Err(error) => out.extend_from_slice(store_error(error)),
    }
    wrote
}

fn touch(
    core: &mut Core,
    slot: ItemSlot,
    key: &[u8],
    exptime: i64,
) -> Result<Option<u64>, StoreError> {
    let expires_at_ns = expires_at_ns(exptime, core.wall_clock_ns());
    let flags = match core.item_get(slot, key)? {
        Some(item) => item.meta.flags,
        None => return Ok(None),
    };
    core.item_touch(slot, key, &Meta { flags, expires_at_ns })
}

type StoreArgs = (StoreMode, u32, i64, u64);

fn store(
    core: &mut Core,
    slot: ItemSlot,
    job: &Job<'_>,
    (mode, flags, exptime, cas): StoreArgs,
    counters: &mut Counters,
    out: &mut Vec<u8>,
) -> bool {
    counters.cmd_set += 1;
    let key = job.key;
    let meta = Meta { flags, expires_at_ns: expires_at_ns(exptime, core.wall_clock_ns()) };
    let current = match mode {
        StoreMode::Set => None,
        _ => match core.item_get(slot, key) {
            Ok(found) => Some(found.map(|item| (item.version, item.meta))),
            Err(error) => {
                out.extend_from_slice(store_error(error));
                return false;
            }
        },
    };
    let outcome = match (mode, current) {
        (StoreMode::Set, _) => core.item_put(slot, key, job.value, &meta, None),
        (StoreMode::Add, Some(None)) => core.item_put(slot, key, job.value, &meta, Some(0)),
        (StoreMode::Replace, Some(Some((version, _)))) => {
            core.item_put(slot, key, job.value, &meta, Some(version))
        }
        (StoreMode::Append | StoreMode::Prepend, Some(Some((version, kept)))) => {
            // memcached keeps the present value's flags and exptime.
            let joined = joined(core, slot, key, job.value, mode == StoreMode::Append);
            match joined {
                Ok(joined) => core.item_put(slot, key, &joined, &kept, Some(version)),
                Err(error) => Err(error),
            }
        }
        (StoreMode::Cas, Some(None)) => {
            counters.cas_misses += 1;
            out.extend_from_slice(b"NOT_FOUND\r\n");
            return false;
        }
        (StoreMode::Cas, Some(Some((version, _)))) if version != job_cas(cas) => {
            counters.cas_badval += 1;
            out.extend_from_slice(b"EXISTS\r\n");
            return false;
        }
        (StoreMode::Cas, Some(Some((version, _)))) => {
            core.item_put(slot, key, job.value, &meta, Some(version))
        }
        // add over a present key; replace, append, prepend of an absent one.
        _ => Ok(ItemPut::Mismatch(0)),
    };
    match outcome {
        Ok(ItemPut::Stored(_)) => {
            counters.cas_hits += u64::from(mode == StoreMode::Cas);
            counters.total_items += 1;
            out.extend_from_slice(b"STORED\r\n");
            true
        }
        Ok(ItemPut::Mismatch(_)) => {
            out.extend_from_slice(b"NOT_STORED\r\n");
            false
        }
        Err(error) => {
            out.extend_from_slice(store_error(error));
            false
        }
    }
}

/// A CAS token of 0 matches nothing (versions start at 1).
fn job_cas(cas: u64) -> u64 {
    if cas == 0 {
        u64::MAX
    } else {
        cas
    }
}

fn joined(
    core: &mut Core,
    slot: ItemSlot,
    key: &[u8],
    extra: &[u8],
    append: bool,
) -> Result<Vec<u8>, StoreError> {
    let Some(item) = core.item_get(slot, key)? else { return Ok(extra.to_vec()) };
    let mut joined = Vec::with_capacity(item.value.len() + extra.len());
    if append {
        joined.extend_from_slice(item.value);
        joined.extend_from_slice(extra);
    } else {
        joined.extend_from_slice(extra);
        joined.extend_from_slice(item.value);
    }
    Ok(joined)
}

fn arith(
    core: &mut Core,
    slot: ItemSlot,
    key: &[u8],
    delta: u64,
    decr: bool,
    counters: &mut Counters,
    out: &mut Vec<u8>,
) -> bool {
    let (hits, misses) = if decr {
        (&mut counters.decr_hits, &mut counters.decr_misses)
    } else {
        (&mut counters.incr_hits, &mut counters.incr_misses)
    };
    let (current, version, meta) = match core.item_get(slot, key) {
        Ok(Some(item)) => (decimal(item.value), item.version, item.meta),
        Ok(None) => {
            *misses += 1;
            out.extend_from_slice(b"NOT_FOUND\r\n");
            return false;
        }
        Err(error) => {
            out.extend_from_slice(store_error(error));
            return false;
        }
    };
    let Some(current) = current else {
        out.extend_from_slice(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
        return false;
    };
    *hits += 1;
    // incr wraps at 2^64, decr stops at 0 (memcached's rules).
    let next = if decr { current.saturating_sub(delta) } else { current.wrapping_add(delta) };
    let text = counter::Text::of(next.into());
    let text = text.as_bytes();
    match core.item_put(slot, key, text, &meta, Some(version)) {
        Ok(ItemPut::Stored(_)) => {
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
            true
        }
        Ok(ItemPut::Mismatch(_)) => {
            unreachable!("one thread: the version read just now is current")
        }
        Err(error) => {
            out.extend_from_slice(store_error(error));
            false
        }
    }
}

/// A value incr/decr can count with: a count as cradle keeps it (`control::counter`, shared
/// with cradle's INCR) that is a u64 (memcached's counters are unsigned).
fn decimal(value: &[u8]) -> Option<u64> {
    counter::parse(value).and_then(|n| u64::try_from(n).ok())
}

/// Deletes every key of this core's endpoints (flush_all).
pub(crate) fn clear(core: &mut Core) -> Result<(), StoreError> {
    let mut keys = Vec::new();
    core.for_each_entry(|key, _, _| keys.push(key.to_vec()))?;
    for key in keys {
        if let control::KeyOwner::Here(slot) = core.owner_of(&key) {
            core.item_delete(slot, &key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_maps_like_memcached() {
        let now = 1_700_000_000 * 1_000_000_000;
        assert_eq!(expires_at_ns(0, now), 0);
        assert_eq!(expires_at_ns(-1, now), 1, "negative: expired at once");
        assert_eq!(expires_at_ns(10, now), now + 10_000_000_000);
        let month = RELATIVE_EXPTIME_MAX_S;
        assert_eq!(expires_at_ns(month, now), now + month as u64 * 1_000_000_000);
        assert_eq!(expires_at_ns(month + 1, now), (month as u64 + 1) * 1_000_000_000);
        assert_eq!(expires_at_ns(1_800_000_000, now), 1_800_000_000 * 1_000_000_000);
    }

    #[test]
    fn counters_parse_only_decimal_values() {
        assert_eq!(decimal(b"42"), Some(42));
        assert_eq!(decimal(b"42  "), Some(42));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        for bad in [&b""[..], b"-1", b"4x", b" 4", b"abc"] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }
}
