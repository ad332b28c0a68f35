//! Replication between the replicas of a partition: the payloads of the node-to-node
//! datagrams of kind "replication" (the envelope, its MAC and replay window, is
//! `control::peer`). Little-endian throughout.
//!
//! ```text
//! FORWARD 1 / PULLED 4: partition u32, epoch u64, sent_ns u64, committed u64, count u16,
//!                       then `count` records
//! record:               lsn u64, op u8 (1 put, 2 delete, 3 put with item meta, 4 note,
//!                       6 digest), client_id u64, tracking_id u64, fingerprint u64,
//!                       at_ns u64, key_len u16, value_len u32, key, value
//! ACK 2:                partition u32, epoch u64, echo_ns u64, lsn u64
//! PROBE 3:              partition u32, epoch u64, sent_ns u64, from u64
//! SNAPSHOT 5:           partition u32, epoch u64, generation u64, base u64, first u64,
//!                       next u64, last u8 (1: `next` ends the snapshot), count u16,
//!                       own_log u64, then `count` records (puts or digests; client_id,
//!                       tracking_id, fingerprint, at_ns 0)
//! BUILT 6:              partition u32, epoch u64, echo_ns u64, generation u64, lsn u64,
//!                       durable u64, entries u64, consistent u8
//! ```
//!
//! FORWARD carries a primary's writes (none: a heartbeat) and the LSN every in-sync replica
//! has (`committed`); ACK says the LSN through which a replica holds the partition's writes
//! under its durability class and echoes the `sent_ns` it answers (the primary's lease is
//! counted from there); PROBE asks a replica for its LSN (`from` 0) or for its records from
//! `from` on, which come back as PULLED.
//!
//! A learner (a replica being built) gets SNAPSHOT: the records live in the primary when its
//! catch-up `generation` began at LSN `base`, numbered from 0: one covers entries `first` to
//! `next` (those of them still live when it was sent), alongside the FORWARDs of every write after `base`. Its BUILT says how
//! far it got: forwarded writes applied through `lsn` (`durable` of them under its class),
//! snapshot entries `0..entries` applied, and whether it now holds the partition exactly
//! (`consistent`). A learner that kept its own store through LSN L says so in a BUILT of
//! generation 0 and `lsn` L (0: it holds nothing); its primary may then send the entries at
//! or below L as DIGESTs (the key, and a 16-byte digest of the record as value) and set
//! `own_log` to L: the learner checks its own copy against each (see `control::core::catchup`).

use crate::Malformed;

/// Bytes before a FORWARD's or PULLED's records.
pub const FORWARD_HEADER_BYTES: usize = 1 + 4 + 8 + 8 + 8 + 2;
/// Bytes before a SNAPSHOT's records.
pub const SNAPSHOT_HEADER_BYTES: usize = 1 + 4 + 8 * 5 + 1 + 2 + 8;
/// Bytes of a record besides its key and value.
pub const RECORD_HEADER_BYTES: usize = 8 + 1 + 8 * 4 + 2 + 4;
/// Bytes a put's item metadata adds to its record (flags u32, expires at u64), only when not
/// zero (the record's op byte is then `PUT_WITH_META`).
pub const RECORD_META_BYTES: usize = 4 + 8;
/// The op byte of a put whose record carries item metadata.
const PUT_WITH_META: u8 = 3;

/// What a replicated write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// The key holds the value.
    Put = 1,
    /// The key was deleted.
    Delete = 2,
    /// The write changed nothing: its value is how it was answered (its status, u16, then
    /// the version, u64), so the replicas hold its completion record too.
    Note = 4,
    /// In a snapshot for a learner that kept its own log: the entry's key and, as its value,
    /// a digest of the record (`DIGEST_BYTES`) for the learner to check its own copy against.
    Digest = 6,
}

/// The value of a DIGEST record.
pub const DIGEST_BYTES: usize = 16;

/// The value of a NOTE record: status, version.
pub const NOTE_VALUE_BYTES: usize = 2 + 8;

/// One write as the primary made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRecord<'a> {
    /// Its LSN (the version it gave the key).
    pub lsn: u64,
    /// Put or delete.
    pub op: WriteOp,
    /// Who asked: client id.
    pub client_id: u64,
    /// Who asked: tracking id.
    pub tracking_id: u64,
    /// The request's fingerprint (see `control::completions`).
    pub fingerprint: u64,
    /// When it was applied (primary's wall clock, ns).
    pub at_ns: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for a delete).
    pub value: &'a [u8],
    /// A put's item flags (memcached's client flags; 0 for a delete).
    pub item_flags: u32,
    /// A put's expiry, wall-clock ns since the Unix epoch (0: never; 0 for a delete).
    pub expires_at_ns: u64,
}

impl WriteRecord<'_> {
    /// Encoded length.
    pub fn len(&self) -> usize {
        RECORD_HEADER_BYTES + self.meta_len() + self.key.len() + self.value.len()
    }

    fn meta_len(&self) -> usize {
        let meta = self.op == WriteOp::Put && (self.item_flags, self.expires_at_ns) != (0, 0);
        if meta {
            RECORD_META_BYTES
        } else {
            0
        }
    }

    /// Whether it has neither key nor value (never, for a real write).
    pub fn is_empty(&self) -> bool {
        self.key.is_empty() && self.value.is_empty()
    }

    /// Appends the encoded record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.lsn.to_le_bytes());
        let meta = self.meta_len() > 0;
        out.push(if meta { PUT_WITH_META } else { self.op as u8 });
        for field in [self.client_id, self.tracking_id, self.fingerprint, self.at_ns] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.value.len() as u32).to_le_bytes());
        if meta {
            out.extend_from_slice(&self.item_flags.to_le_bytes());
            out.extend_from_slice(&self.expires_at_ns.to_le_bytes());
        }
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
    }
}

/// The records of a FORWARD or PULLED, decoded one at a time.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<WriteRecord<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let result = decode_record(self.bytes);
        match result {
            Ok((record, rest)) => {
                self.bytes = rest;
                Some(Ok(record))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn decode_record(b: &[u8]) -> Result<(WriteRecord<'_>, &[u8]), Malformed> {
    if b.len() < RECORD_HEADER_BYTES {
        return Err(Malformed::Truncated);
    }
    let (op, meta) = match b[8] {
        1 => (WriteOp::Put, false),
        2 => (WriteOp::Delete, false),
        PUT_WITH_META => (WriteOp::Put, true),
        4 => (WriteOp::Note, false),
        6 => (WriteOp::Digest, false),
        _ => return Err(Malformed::BadOpcode),
    };
    let key_len = u16::from_le_bytes([b[41], b[42]]) as usize;
    let value_len = u32::from_le_bytes(b[43..47].try_into().expect("4 bytes")) as usize;
    let mut rest = &b[RECORD_HEADER_BYTES..];
    let (mut item_flags, mut expires_at_ns) = (0, 0);
    if meta {
        if rest.len() < RECORD_META_BYTES {
            return Err(Malformed::Truncated);
        }
        item_flags = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        expires_at_ns = u64_at(rest, 4);
        rest = &rest[RECORD_META_BYTES..];
    }
    if rest.len() < key_len + value_len {
        return Err(Malformed::Truncated);
    }
    let value_fits = match op {
        WriteOp::Put => true,
        WriteOp::Delete => value_len == 0,
        WriteOp::Note => value_len == NOTE_VALUE_BYTES,
        WriteOp::Digest => value_len == DIGEST_BYTES,
    };
    if key_len == 0 || key_len > crate::KEY_BYTES_MAX || !value_fits {
        return Err(Malformed::BadFragment);
    }
    let record = WriteRecord {
        lsn: u64_at(b, 0),
        op,
        client_id: u64_at(b, 9),
        tracking_id: u64_at(b, 17),
        fingerprint: u64_at(b, 25),
        at_ns: u64_at(b, 33),
        key: &rest[..key_len],
        value: &rest[key_len..key_len + value_len],
        item_flags,
        expires_at_ns,
    };
    Ok((record, &rest[key_len + value_len..]))
}

/// A decoded replication payload.
#[derive(Clone, Debug)]
pub enum Replication<'a> {
    /// A primary's writes (or, with no records, its heartbeat).
    Forward {
        /// The partition.
        partition: u32,
        /// The map epoch the primary serves by.
        epoch: u64,
        /// The primary's loop clock when it sent this (echoed by the ACK).
        sent_ns: u64,
        /// Every in-sync replica holds the writes through this LSN.
        committed: u64,
        /// The writes, in LSN order.
        records: Records<'a>,
    },
    /// A replica's LSN.
    Ack {
        /// The partition.
        partition: u32,
        /// The replica's map epoch.
        epoch: u64,
        /// The `sent_ns` of the FORWARD or PROBE answered.
        echo_ns: u64,
        /// The replica holds every write through this LSN (durably as its class says).
        lsn: u64,
        /// In a probe's answer, how long ago (on the replica's clock) it last acked a
        /// primary: the old primary's lease runs out a lease after that, so the new one
        /// knows when it may serve. 0 in an ack of a FORWARD.
        quiet_ns: u64,
    },
    /// A primary asks a replica for its LSN, or for its records from `from` on.
    Probe {
        /// The partition.
        partition: u32,
        /// The asker's map epoch: a replica answers only once it has it.
        epoch: u64,
        /// The asker's loop clock (echoed).
        sent_ns: u64,
        /// 0: only the LSN; else the first LSN wanted.
        from: u64,
    },
    /// The records a PROBE asked for.
    Pulled {
        /// The partition.
        partition: u32,
        /// The replica's map epoch.
        epoch: u64,
        /// The PROBE's `sent_ns`.
        echo_ns: u64,
        /// Unused (0).
        committed: u64,
        /// The records, in LSN order.
        records: Records<'a>,
    },
    /// Entries of a primary's snapshot, for a learner.
    Snapshot {
        /// The partition.
        partition: u32,
        /// The primary's map epoch.
        epoch: u64,
        /// Names this catch-up (a new one starts the learner over).
        generation: u64,
        /// The primary's LSN when the snapshot was taken.
        base: u64,
        /// The number of the first entry covered.
        first: u64,
        /// The number after the last entry covered.
        next: u64,
        /// Whether `next` is the snapshot's end.
        last: bool,
        /// The learner's own log through this LSN stands for the entries at or below it,
        /// which come as digests (0: every entry is a put).
        own_log: u64,
        /// The entries: puts at their versions, or digests.
        records: Records<'a>,
    },
    /// How far a learner got.
    Built {
        /// The partition.
        partition: u32,
        /// The learner's map epoch.
        epoch: u64,
        /// Its progress.
        progress: Progress,
    },
}

/// Appends a SNAPSHOT header; the records follow, then `finish_snapshot` fills it in.
pub fn encode_snapshot_header(
    out: &mut Vec<u8>,
    partition: u32,
    epoch: u64,
    generation: u64,
    base: u64,
    (first, own_log): (u64, u64),
) {
    out.push(5);
    out.extend_from_slice(&partition.to_le_bytes());
    for field in [epoch, generation, base, first, first] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.push(0);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&own_log.to_le_bytes());
}

/// Sets the end, the `last` flag and the record count of a SNAPSHOT encoded at the start of
/// `out`.
pub fn finish_snapshot(out: &mut [u8], next: u64, last: bool, count: u16) {
    out[37..45].copy_from_slice(&next.to_le_bytes());
    out[45] = u8::from(last);
    out[46..48].copy_from_slice(&count.to_le_bytes());
}

/// How far a learner got (a BUILT's fields after the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The `sent_ns` echoed.
    pub echo_ns: u64,
    /// The catch-up's generation.
    pub generation: u64,
    /// Forwarded writes applied through this LSN.
    pub lsn: u64,
    /// Held durably through this LSN.
    pub durable: u64,
    /// Snapshot entries applied.
    pub entries: u64,
    /// It holds the partition exactly.
    pub consistent: bool,
}

/// Appends a BUILT.
pub fn encode_built(out: &mut Vec<u8>, partition: u32, epoch: u64, p: &Progress) {
    out.push(6);
    out.extend_from_slice(&partition.to_le_bytes());
    for field in [epoch, p.echo_ns, p.generation, p.lsn, p.durable, p.entries] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.push(u8::from(p.consistent));
}

/// Appends a FORWARD (`pulled`: a PULLED) header for `count` records, which follow.
pub fn encode_forward_header(
    out: &mut Vec<u8>,
    pulled: bool,
    partition: u32,
    epoch: u64,
    sent_ns: u64,
    committed: u64,
    count: u16,
) {
    out.push(if pulled { 4 } else { 1 });
    out.extend_from_slice(&partition.to_le_bytes());
    for field in [epoch, sent_ns, committed] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&count.to_le_bytes());
}

/// Sets the record count of a FORWARD or PULLED encoded at the start of `out`.
pub fn set_forward_count(out: &mut [u8], count: u16) {
    out[FORWARD_HEADER_BYTES - 2..FORWARD_HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
}

/// Appends an ACK (`quiet_ns`: see `Replication::Ack`).
pub fn encode_ack(
    out: &mut Vec<u8>,
    partition: u32,
    epoch: u64,
    echo_ns: u64,
    lsn: u64,
    quiet_ns: u64,
) {
    out.push(2);
    out.extend_from_slice(&partition.to_le_bytes());
    for field in [epoch, echo_ns, lsn, quiet_ns] {
        out.extend_from_slice(&field.to_le_bytes());
    }
}

/// Appends a PROBE.
pub fn encode_probe(out: &mut Vec<u8>, partition: u32, epoch: u64, sent_ns: u64, from: u64) {
    out.push(3);
    out.extend_from_slice(&partition.to_le_bytes());
    for field in [epoch, sent_ns, from] {
        out.extend_from_slice(&field.to_le_bytes());
    }
}

impl Replication<'_> {
    /// Decodes a payload. Records are checked as they are read.
    pub fn decode(b: &[u8]) -> Result<Replication<'_>, Malformed> {
        let (&kind, _) = b.split_first().ok_or(Malformed::Truncated)?;
        let fixed = |len: usize| if b.len() == len { Ok(()) } else { Err(Malformed::Truncated) };
        let partition = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
        match kind {
            1 | 4 => {
                if b.len() < FORWARD_HEADER_BYTES {
                    return Err(Malformed::Truncated);
                }
                let records = Records {
                    bytes: &b[FORWARD_HEADER_BYTES..],
                    left: u16::from_le_bytes([b[29], b[30]]),
                };
                let (partition, epoch, sent_ns, committed) =
                    (partition(1), u64_at(b, 5), u64_at(b, 13), u64_at(b, 21));
                Ok(if kind == 1 {
                    Replication::Forward { partition, epoch, sent_ns, committed, records }
                } else {
                    Replication::Pulled { partition, epoch, echo_ns: sent_ns, committed, records }
                })
            }
            2 => {
                fixed(37)?;
                let (epoch, echo_ns, lsn) = (u64_at(b, 5), u64_at(b, 13), u64_at(b, 21));
                let quiet_ns = u64_at(b, 29);
                Ok(Replication::Ack { partition: partition(1), epoch, echo_ns, lsn, quiet_ns })
            }
            3 => {
                fixed(29)?;
                let (epoch, sent_ns, from) = (u64_at(b, 5), u64_at(b, 13), u64_at(b, 21));
                Ok(Replication::Probe { partition: partition(1), epoch, sent_ns, from })
            }
            5 => {
                if b.len() < SNAPSHOT_HEADER_BYTES || b[45] > 1 || u64_at(b, 37) < u64_at(b, 29) {
                    return Err(Malformed::Truncated);
                }
                let records = Records {
                    bytes: &b[SNAPSHOT_HEADER_BYTES..],
                    left: u16::from_le_bytes([b[46], b[47]]),
                };
                Ok(Replication::Snapshot {
                    partition: partition(1),
                    epoch: u64_at(b, 5),
                    generation: u64_at(b, 13),
                    base: u64_at(b, 21),
                    first: u64_at(b, 29),
                    next: u64_at(b, 37),
                    last: b[45] == 1,
                    own_log: u64_at(b, 48),
                    records,
                })
            }
            6 => {
                fixed(54)?;
                if b[53] > 1 {
                    return Err(Malformed::Truncated);
                }
                let progress = Progress {
                    echo_ns: u64_at(b, 13),
                    generation: u64_at(b, 21),
                    lsn: u64_at(b, 29),
                    durable: u64_at(b, 37),
                    entries: u64_at(b, 45),
                    consistent: b[53] == 1,
                };
                Ok(Replication::Built { partition: partition(1), epoch: u64_at(b, 5), progress })
            }
            _ => Err(Malformed::BadOpcode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lsn: u64, key: &'static [u8], value: &'static [u8]) -> WriteRecord<'static> {
        let op = if value.is_empty() { WriteOp::Delete } else { WriteOp::Put };
        WriteRecord {
            lsn,
            op,
            client_id: 1,
            tracking_id: lsn + 10,
            fingerprint: 3,
            at_ns: 4,
            key,
            value,
            item_flags: 0,
            expires_at_ns: 0,
        }
    }

    #[test]
    fn every_payload_round_trips_and_damage_is_refused() {
        // (The second carries item metadata: 12 more bytes, its own op byte.)
        let with_meta =
            WriteRecord { item_flags: 7, expires_at_ns: 1 << 60, ..record(8, b"m", b"v") };
        assert_eq!(with_meta.len(), record(8, b"m", b"v").len() + RECORD_META_BYTES);
        // (The fourth is a note: a write that changed nothing, answered status 3, version 0.)
        let answer = &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let note = WriteRecord { op: WriteOp::Note, ..record(10, b"n", answer) };
        let writes = [record(7, b"k", b"value"), with_meta, record(9, b"k", b""), note];
        let mut out = Vec::new();
        encode_forward_header(&mut out, false, 5, 9, 100, 6, 0);
        for w in &writes {
            w.encode(&mut out);
        }
        set_forward_count(&mut out, 4);
        let Replication::Forward { partition, epoch, sent_ns, committed, records } =
            Replication::decode(&out).unwrap()
        else {
            panic!("a forward")
        };
        assert_eq!((partition, epoch, sent_ns, committed), (5, 9, 100, 6));
        let got: Vec<WriteRecord<'_>> = records.map(|r| r.unwrap()).collect();
        assert_eq!(got, writes);
        // A note's value is its answer, exactly.
        let mut short = Vec::new();
        encode_forward_header(&mut short, false, 5, 9, 100, 6, 1);
        WriteRecord { op: WriteOp::Note, ..record(11, b"n", b"123456789") }.encode(&mut short);
        let Ok(Replication::Forward { mut records, .. }) = Replication::decode(&short) else {
            panic!("header intact")
        };
        assert_eq!(records.next(), Some(Err(Malformed::BadFragment)));
        // Cut anywhere inside the records: the record there fails, none is invented.
        for cut in FORWARD_HEADER_BYTES..out.len() {
            let Ok(Replication::Forward { records, .. }) = Replication::decode(&out[..cut]) else {
                panic!("header intact at {cut}")
            };
            assert!(records.clone().any(|r| r.is_err()), "cut at {cut}");
        }
        let mut ack = Vec::new();
        encode_ack(&mut ack, 5, 9, 100, 8, 7);
        assert!(matches!(
            Replication::decode(&ack).unwrap(),
            Replication::Ack { partition: 5, epoch: 9, echo_ns: 100, lsn: 8, quiet_ns: 7 }
        ));
        assert!(Replication::decode(&ack[..36]).is_err());
        let mut probe = Vec::new();
        encode_probe(&mut probe, 5, 9, 100, 3);
        assert!(matches!(
            Replication::decode(&probe).unwrap(),
            Replication::Probe { partition: 5, epoch: 9, sent_ns: 100, from: 3 }
        ));
        assert!(Replication::decode(&[9]).is_err());
        let mut snapshot = Vec::new();
        encode_snapshot_header(&mut snapshot, 5, 9, 77, 40, (12, 33));
        writes[0].encode(&mut snapshot);
        finish_snapshot(&mut snapshot, 15, true, 1);
        let Replication::Snapshot {
            partition,
            epoch,
            generation,
            base,
            first,
            next,
            last,
            own_log,
            records,
        } = Replication::decode(&snapshot).unwrap()
        else {
            panic!("a snapshot")
        };
        assert_eq!((partition, epoch, generation, base), (5, 9, 77, 40));
        assert_eq!((first, next, last, own_log), (12, 15, true, 33));
        assert_eq!(records.map(|r| r.unwrap()).collect::<Vec<_>>(), vec![writes[0]]);
        assert!(Replication::decode(&snapshot[..SNAPSHOT_HEADER_BYTES - 1]).is_err());
        let progress = Progress {
            echo_ns: 100,
            generation: 77,
            lsn: 50,
            durable: 49,
            entries: 13,
            consistent: true,
        };
        let mut built = Vec::new();
        encode_built(&mut built, 5, 9, &progress);
        let Replication::Built { partition: 5, epoch: 9, progress: got } =
            Replication::decode(&built).unwrap()
        else {
            panic!("a built")
        };
        assert_eq!(got, progress);
        assert!(Replication::decode(&built[..53]).is_err());
        built[53] = 2;
        assert!(Replication::decode(&built).is_err());
    }
}
