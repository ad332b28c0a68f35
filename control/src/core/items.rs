//! Items: the core's store operations for protocol doors other than cradle's own (the
//! memcached door). A door parses its protocol, asks `owner_of` which core serves a key, and
//! on the owning core reads and writes through these calls, which keep the same bookkeeping
//! as cradle's write path (read cache, key count, dirty list, compaction queue, `memory`
//! class write-out). Writes carry no request stamp: a door without tracking ids has no
//! exactly-once resends to answer. Under the `flushed` class a write is durable only after
//! the batch's group commit: a door answers it once `item_settled` says so.

use super::*;
use storage::{CasOutcome, Item, Meta};

/// Where a key is served, as this core routes by its partition map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOwner {
    /// An endpoint on this core.
    Here(ItemSlot),
    /// Another core of this node (its number).
    Core(u32),
    /// Another node (a door answers with an error: it has no redirect).
    Elsewhere,
}

/// One of this core's endpoints, as `owner_of` found it. Valid until the next map change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemSlot(usize);

/// The outcome of [`Core::item_put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemPut {
    /// Written: the new version.
    Stored(u64),
    /// Not written: the expected version is not the current one (0: absent).
    Mismatch(u64),
}

impl Core {
    /// Sets the time of the door requests served next (the loop's clock, as passed to
    /// `handle_datagram`): expiry is judged and writes are timed by it.
    pub fn begin_items(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// Wall-clock nanoseconds since the Unix epoch, as this core reckons them now.
    pub fn wall_clock_ns(&self) -> u64 {
        self.wall_ns()
    }

    /// This core's number on its node.
    pub fn core_id(&self) -> u32 {
        self.config.core
    }

    /// Which core serves `key`.
    pub fn owner_of(&self, key: &[u8]) -> KeyOwner {
        let (_, target) = self.routes.route(key_hash(key));
        let owner = match target {
            Target::Local(slot) => return KeyOwner::Here(ItemSlot(slot)),
            Target::Remote(owner) => owner,
        };
        let Ok((addr, _)) = proto::decode_addr(self.routes.hint(owner)) else {
            return KeyOwner::Elsewhere;
        };
        let layout = &self.config.layout;
        match (0..layout.cores()).find(|&core| layout.addr_of(core) == addr) {
            Some(core) => KeyOwner::Core(core),
            None => KeyOwner::Elsewhere,
        }
    }

    /// The live value of `key` with its version and metadata (an expired one is absent).
    pub fn item_get(&mut self, slot: ItemSlot, key: &[u8]) -> Result<Option<Item<'_>>, StoreError> {
        let wall = self.wall_ns();
        let endpoint = &mut self.endpoints[slot.0];
        endpoint.requests += 1;
        endpoint.store.set_clock(wall);
        endpoint.store.get_item(&mut self.shelf, key)
    }

    /// Whether a door may read through this endpoint now. A replicated primary answers a door
    /// only while it may serve (its lease valid, no promotion under way) and holds nothing
    /// uncommitted that the read could see: a door's reply is not held for the commit as the
    /// cradle protocol's are, so it must not observe what a failover could lose.
    pub fn item_readable(&self, slot: ItemSlot) -> bool {
        let lease_ns = self.link.as_ref().map_or(0, |l| l.lease_ns());
        let endpoint = &self.endpoints[slot.0];
        super::replica::reads_committed_now(endpoint, self.now_ns, self.wall_ns(), lease_ns)
    }

    /// Whether a door may write through this endpoint. Not when it is replicated (a cluster):
    /// door writes would bypass the forwarding to backups and their acknowledgements, so a
    /// door refuses them there until it joins the replication path. (Reads are served.)
    pub fn item_writable(&self, slot: ItemSlot) -> bool {
        self.endpoints[slot.0].replica.is_none()
    }

    /// The length of the live value of `key`, without reading a blob value's chunks (so a
    /// door can refuse a reply it may not send before it assembles it).
    pub fn item_value_len(
        &mut self,
        slot: ItemSlot,
        key: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let wall = self.wall_ns();
        let store = &mut self.endpoints[slot.0].store;
        store.set_clock(wall);
        Ok(store.get_reference(&self.shelf, key)?.map(|(value, _)| match value {
            storage::ValueRef::Inline(bytes) => bytes.len() as u64,
            storage::ValueRef::Blob(reference) => u64::from_le_bytes(
                reference[..8].try_into().expect("a reference starts with the length"),
            ),
        }))
    }

    /// Writes `value` with `meta` under `key`: unconditionally, or only if the key's version
    /// is `expected` (0: only if absent).
    pub fn item_put(
        &mut self,
        slot: ItemSlot,
        key: &[u8],
        value: &[u8],
        meta: &Meta,
        expected: Option<u64>,
    ) -> Result<ItemPut, StoreError> {
        self.item_write(slot, key, |store, shelf| match expected {
            None => store.put_with(shelf, key, value, meta, None).map(ItemPut::Stored),
            Some(version) => {
                store.cas_with(shelf, key, version, value, meta, None).map(|o| match o {
                    CasOutcome::Swapped(v) => ItemPut::Stored(v),
                    CasOutcome::Mismatch(v) => ItemPut::Mismatch(v),
                })
            }
        })
    }

    /// Gives the live value of `key` new metadata; the new version, `None` if absent.
    pub fn item_touch(
        &mut self,
        slot: ItemSlot,
        key: &[u8],
        meta: &Meta,
    ) -> Result<Option<u64>, StoreError> {
        self.item_write(slot, key, |store, shelf| store.rewrite_meta(shelf, key, meta, None))
    }

    /// Deletes `key`; whether it was there (an expired value was not).
    pub fn item_delete(&mut self, slot: ItemSlot, key: &[u8]) -> Result<bool, StoreError> {
        self.item_write(slot, key, |store, shelf| store.delete(shelf, key, None))
    }

    /// Whether the writes made so far to the endpoint are as durable as the class promises:
    /// `None` while they wait for the group commit, then the outcome (an error if the flush
    /// failed: the write may be lost and must not be acknowledged).
    pub fn item_settled(&self, slot: ItemSlot) -> Option<Result<(), StoreError>> {
        let endpoint = &self.endpoints[slot.0];
        if self.durability == Durability::Flushed {
            // (A failed sync fails the writes it held even before the loop has seen it.)
            let failed = self.sync_clock.as_ref().is_some_and(|c| c.failed());
            if endpoint.sync_ticket != 0 && failed {
                return Some(Err(StoreError::Poisoned));
            }
            if self.awaits_sync(slot.0) {
                return None;
            }
        }
        Some(endpoint.store.failure(&self.shelf).map_or(Ok(()), Err))
    }

    /// Runs one write against the endpoint's store with the write path's bookkeeping.
    fn item_write<T>(
        &mut self,
        slot: ItemSlot,
        key: &[u8],
        write: impl FnOnce(&mut Store, &mut Shelf) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let wall = self.wall_ns();
        // A cached copy of the key's old value must not outlive it.
        self.read_cache.forget(slot.0, key);
        let endpoint = &mut self.endpoints[slot.0];
        endpoint.requests += 1;
        let store = &mut endpoint.store;
        store.set_clock(wall);
        let keys_before = store.len() as u64;
        let outcome = write(store, &mut self.shelf);
        // `memory`: in the page cache before the answer exists (as `apply` does).
        let outcome = match outcome {
            Ok(done) if self.durability == Durability::Memory => {
                store.write_out(&mut self.shelf).map(|()| done)
            }
            other => other,
        };
        self.counters.keys = self.counters.keys + store.len() as u64 - keys_before;
        if store.needs_flush() && !endpoint.dirty {
            endpoint.dirty = true;
            self.dirty.push(slot.0);
        }
        outcome
    }
}
