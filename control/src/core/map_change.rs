//! Changes of the partition map, taken at batch boundaries: the core starts and stops serving
//! partitions and routes by the new map from the next datagram on.

use super::*;
use std::sync::mpsc::{Receiver, Sender};

/// A new partition map for a core, naming the partitions it newly places there.
#[derive(Debug)]
pub struct MapChange {
    /// The map to serve by; its epoch must be newer than the core's.
    pub map: PartitionMap,
    /// Each partition the map newly places on this core: the core makes it an empty
    /// endpoint on its log. (Not kept across a restart, which serves the node's layout: a
    /// log with records of such an endpoint is refused at start. Repartitioning, #9, names
    /// new endpoints in the log.)
    pub added: Vec<u32>,
}

/// What a core did with a [`MapChange`] from its inbox.
#[derive(Debug)]
pub enum MapOutcome {
    /// Applied at `epoch`.
    Applied {
        /// The map epoch now served.
        epoch: u64,
        /// The partitions that left this core: their endpoints were dropped (a drop record
        /// each in the core's log, whose cleaning frees their records).
        dropped: Vec<u32>,
    },
    /// Refused, nothing changed: why.
    Refused(ConfigError),
    /// At map `epoch`, this core's primary of `partition` has built its learner at
    /// `learner`: the map may make it a backup (see `core::catchup`).
    Built {
        /// The map epoch the primary served by.
        epoch: u64,
        /// The partition.
        partition: u32,
        /// The learner's address.
        learner: SocketAddr,
    },
}

/// The single-producer inbox a core reads map changes from (at batch boundaries, without
/// blocking), and where it says what came of each.
#[derive(Debug)]
pub struct MapInbox {
    /// Changes, in order.
    pub changes: Receiver<MapChange>,
    /// One outcome per change.
    pub outcomes: Sender<MapOutcome>,
}

impl Core {
    /// Reads map changes from `inbox` at every batch boundary from now on.
    pub fn set_map_inbox(&mut self, inbox: MapInbox) {
        self.map_inbox = Some(inbox);
    }

    /// Serves by `change.map` from now on. Writes not yet flushed are flushed first (their
    /// held replies go out); endpoints of partitions the map no longer places here are
    /// dropped (their partitions returned); partitions in `added` get new, empty endpoints.
    /// A map that is not newer, does not cover the hash space, or names in `added` a
    /// partition it does not newly place here is refused and nothing changes.
    pub fn handle_map(
        &mut self,
        change: MapChange,
        tx: &mut dyn Transmit,
    ) -> Result<Vec<u32>, ConfigError> {
        let MapChange { map, added } = change;
        if map.epoch <= self.routes.epoch() {
            return Err(ConfigError(format!(
                "map epoch {} is not newer than {}",
                map.epoch,
                self.routes.epoch()
            )));
        }
        let me = self.config.layout.addr_of(self.config.core);
        // Primaries and backups here (a learner's endpoint is kept, but not sent to yet).
        let mut here: Vec<u32> = map
            .entries
            .iter()
            .filter(|e| e.addr == me || e.role_of(me).is_some())
            .map(|e| e.partition)
            .collect();
        here.sort_unstable();
        let placed_here = |p: &u32| here.binary_search(p).is_ok();
        // A cluster member keeps every endpoint it has, placed here or not: a later map may
        // make it a learner here again (it is emptied then), and no store is handed in.
        let clustered = self.link.is_some();
        let kept: Vec<bool> =
            self.endpoints.iter().map(|e| clustered || placed_here(&e.partition)).collect();
        let mut partitions: Vec<u32> = self
            .endpoints
            .iter()
            .zip(&kept)
            .filter(|(_, &k)| k)
            .map(|(e, _)| e.partition)
            .collect();
        let existing = Slots::new(partitions.iter().copied());
        let mut added_ids: Vec<u32> = added.clone();
        added_ids.sort_unstable();
        let twice = added_ids.windows(2).any(|w| w[0] == w[1]);
        for partition in &added {
            if twice || !placed_here(partition) || existing.get(*partition).is_some() {
                return Err(ConfigError(format!(
                    "map epoch {}: a store was given for partition {partition}, which is not \
                     newly placed here",
                    map.epoch
                )));
            }
            partitions.push(*partition);
        }
        let slots = Slots::new(partitions.iter().copied());
        let routes = Routes::new(&map, me, |p| slots.get(p))?;

        let replicated_here = map
            .entries
            .iter()
            .any(|e| e.role_of(me).is_some() || (e.addr == me && !e.replicas.is_empty()));
        if replicated_here && self.link.is_none() {
            return Err(ConfigError(format!(
                "map epoch {}: replicated partitions on a core without a cluster key",
                map.epoch
            )));
        }

        // Valid: no write may be held across the change (its endpoint may leave).
        self.flush_dirty(tx);
        debug_assert!(self.dirty.is_empty() && self.pending.is_empty());
        let mut endpoints = Vec::with_capacity(partitions.len());
        let mut dropped = Vec::new();
        for (endpoint, keep) in std::mem::take(&mut self.endpoints).into_iter().zip(kept) {
            if keep {
                endpoints.push(endpoint);
            } else {
                let mut store = endpoint.store;
                // (A log that stopped drops nothing: it takes no record, and a restart
                // serves the layout anyway.)
                let _ = store.clear(&mut self.shelf);
                dropped.push(endpoint.partition);
            }
        }
        for partition in added {
            endpoints.push(Endpoint::new(partition, self.shelf.add_endpoint()));
        }
        // Each endpoint's part in its partition's replication, from the new map.
        let mut by_partition: Vec<(u32, usize)> =
            map.entries.iter().enumerate().map(|(i, e)| (e.partition, i)).collect();
        by_partition.sort_unstable();
        let now_ns = self.now_ns;
        self.replicated.clear();
        for (slot, endpoint) in endpoints.iter_mut().enumerate() {
            let i = by_partition.binary_search_by_key(&endpoint.partition, |&(p, _)| p);
            let entry = &map.entries[by_partition[i.expect("the map covers every partition")].1];
            let old = endpoint.replica.take();
            let was_learner = old.as_deref().is_some_and(ReplicaState::is_learner);
            let last = endpoint.store.last_lsn();
            endpoint.replica = super::replica::state_for(entry, me, old, last, now_ns, clustered);
            if was_learner && endpoint.replica.as_deref().is_some_and(ReplicaState::is_backup) {
                self.counters.learners_joined += 1;
            }
            let building = endpoint.replica.as_deref_mut().and_then(|r| r.building());
            if let Some(building) = building.filter(|b| !b.ready) {
                let store = &endpoint.store;
                let healthy = store.failure(&self.shelf).is_none() && store.quarantine().is_none();
                if store.last_lsn() > 0 && healthy {
                    // Its own records are kept, to be checked against its primary's
                    // (`core::catchup`): only what they lack is sent.
                    (building.ready, building.kept) = (true, Some(store.last_lsn()));
                } else {
                    // (A store that fails to empty stays unbuilt: it confirms nothing.)
                    building.ready = endpoint.store.clear(&mut self.shelf).is_ok();
                    self.read_cache = ReadCache::default();
                }
            }
            if endpoint.replica.is_some() {
                self.replicated.push(slot);
            }
        }
        // Held replies and queued replication work name old slots: clients resend (and are
        // answered from their completion records).
        self.held.clear();
        self.forward_due.clear();
        self.acks_due.clear();
        self.touched.clear();
        self.all_slots = Slots::new(endpoints.iter().map(|e| e.partition));
        self.awaiting_map = false;
        self.read_cache = ReadCache::default();
        self.endpoints = endpoints;
        self.slot_of = slots_by_record_id(&self.endpoints);
        self.routes = routes;
        self.map_payload = map.encode().into();
        self.counters.endpoints = self.endpoints.len() as u64;
        self.counters.keys = self.endpoints.iter().map(|e| e.store.len() as u64).sum();
        Ok(dropped)
    }

    /// Applies the changes waiting in the inbox, if any.
    pub(super) fn take_map_changes(&mut self, tx: &mut dyn Transmit) {
        let Some(inbox) = self.map_inbox.take() else { return };
        let mut changed = false;
        while let Ok(change) = inbox.changes.try_recv() {
            changed = true;
            let outcome = match self.handle_map(change, tx) {
                Ok(dropped) => MapOutcome::Applied { epoch: self.routes.epoch(), dropped },
                Err(error) => MapOutcome::Refused(error),
            };
            // The sender may be gone (the node stopping): nothing is left to tell.
            let _ = inbox.outcomes.send(outcome);
        }
        self.map_inbox = Some(inbox);
        if changed {
            // New primaries probe now, and the probes that came first are answered.
            self.scan_replicas(self.now_ns, tx);
            self.answer_early_probes(tx);
        }
    }
}
