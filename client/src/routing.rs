//! Where requests go: the partition map, the configured servers, and what the client learned
//! about each server address (its token and its round-trip estimates, one per request class).

use crate::rtt::{RttClass, RttEstimator};
use proto::{key_hash, PartitionMap};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Server addresses the client remembers tokens and estimates for. Beyond it the tables are
/// cleared and relearned (a token comes back with the next RETRY_WITH_TOKEN).
const ADDRESSES_MAX: usize = 4096;

/// The destination of a keyed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The server.
    pub(crate) addr: SocketAddr,
    /// The partition the map says owns the key (0 before a map is known).
    pub(crate) partition: u32,
}

/// Routing knowledge.
#[derive(Debug)]
pub(crate) struct Router {
    servers: Vec<SocketAddr>,
    map: Option<PartitionMap>,
    tokens: HashMap<SocketAddr, u64>,
    estimators: HashMap<SocketAddr, [RttEstimator; RttClass::COUNT]>,
    fresh: RttEstimator,
    sampled_last: Option<(SocketAddr, RttClass)>,
    /// The cluster the first map adopted named: every later map must name it too.
    cluster: Option<u64>,
    /// Servers known to be of `cluster`: their own map named it, or a map of it lists them.
    vouched: HashSet<SocketAddr>,
    /// Servers whose map named another cluster (and which): never sent anything again.
    foreign: HashMap<SocketAddr, u64>,
    /// Servers that answered something (a refusal from one of them may be a restart).
    answered: HashSet<SocketAddr>,
}

/// A map from a server of another cluster than the client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Foreign {
    pub(crate) server: SocketAddr,
    pub(crate) cluster: u64,
    pub(crate) expected: u64,
}

impl Router {
    /// A router over the configured servers, with `fresh` as every server's first estimator
    /// of each class.
    pub(crate) fn new(servers: Vec<SocketAddr>, fresh: RttEstimator) -> Self {
        assert!(!servers.is_empty(), "no servers");
        Router {
            servers,
            map: None,
            tokens: HashMap::new(),
            estimators: HashMap::new(),
            fresh,
            sampled_last: None,
            cluster: None,
            vouched: HashSet::new(),
            foreign: HashMap::new(),
            answered: HashSet::new(),
        }
    }

    /// The owner of `key` by the map, or the first configured server before a map is known.
    pub(crate) fn route(&self, key: &[u8]) -> Route {
        let entry = self.map.as_ref().and_then(|map| map.lookup(key_hash(key)));
        match entry {
            Some(entry) => Route { addr: entry.addr, partition: entry.partition },
            None => Route { addr: self.servers[0], partition: 0 },
        }
    }

    /// Where `request` goes when it names no server: a SCAN to its partition's owner, a keyed
    /// request to its key's.
    pub(crate) fn route_request(&self, request: &crate::request::Request) -> Route {
        let Some(partition) = request.scan_partition() else {
            return self.route(request.key());
        };
        let owner = self
            .map
            .as_ref()
            .and_then(|map| map.entries.iter().find(|entry| entry.partition == partition));
        Route { addr: owner.map_or(self.servers[0], |entry| entry.addr), partition }
    }

    /// The known map's epoch (0: none).
    pub(crate) fn epoch(&self) -> u64 {
        self.map.as_ref().map_or(0, |map| map.epoch)
    }

    /// The known map.
    pub(crate) fn map(&self) -> Option<&PartitionMap> {
        self.map.as_ref()
    }

    /// Adopts `map`, which `from` sent, unless the known one is newer; returns whether it
    /// was adopted. A map of another cluster than the first one adopted is refused, and its
    /// sender is never used again.
    pub(crate) fn install_map(
        &mut self,
        map: PartitionMap,
        from: SocketAddr,
    ) -> Result<bool, Foreign> {
        if let Some(expected) = self.cluster.filter(|&ours| ours != map.cluster) {
            self.foreign.insert(from, map.cluster);
            return Err(Foreign { server: from, cluster: map.cluster, expected });
        }
        self.cluster = Some(map.cluster);
        self.vouched.insert(from);
        for entry in &map.entries {
            self.vouched.insert(entry.addr);
            self.vouched.extend(entry.replicas.iter().map(|r| r.addr));
        }
        if self.map.as_ref().is_some_and(|known| known.epoch >= map.epoch) {
            return Ok(false);
        }
        self.map = Some(map);
        Ok(true)
    }

    /// A configured server refused for naming another cluster, if any (the error to report
    /// when no other server is left).
    pub(crate) fn foreign_server(&self) -> Option<Foreign> {
        let expected = self.cluster?;
        let server = self.servers.iter().find(|s| self.foreign.contains_key(*s))?;
        Some(Foreign { server: *server, cluster: self.foreign[server], expected })
    }

    /// Whether requests may go to `addr`: it is known to be of the client's cluster, or no
    /// cluster is known yet (the first server is how the client learns it).
    pub(crate) fn vouched_for(&self, addr: SocketAddr) -> bool {
        self.cluster.is_none() || self.vouched.contains(&addr)
    }

    /// The `turn`-th configured server (cycling) not in `avoid`, skipping servers of another
    /// cluster: on a host the map names other than every one of `avoid`'s, else on another
    /// host, else on any host the map names, else any.
    pub(crate) fn server_in_turn(&self, turn: usize, avoid: &[SocketAddr]) -> Option<SocketAddr> {
        let usable = |s: &&SocketAddr| !self.foreign.contains_key(*s) && !avoid.contains(*s);
        let other_host = |s: &&SocketAddr| avoid.iter().all(|a| a.ip() != s.ip());
        let named = |s: &&SocketAddr| self.names_host(s);
        // Another host the map names, else another host, else any the map names, else any.
        let picks: [&dyn Fn(&&SocketAddr) -> bool; 4] =
            [&|s| other_host(s) && named(s), &|s| other_host(s), &|s| named(s), &|_| true];
        picks.iter().find_map(|pick| {
            let candidates: Vec<SocketAddr> =
                self.servers.iter().filter(usable).filter(|s| pick(s)).copied().collect();
            (!candidates.is_empty()).then(|| candidates[turn % candidates.len()])
        })
    }

    /// The first configured server not in `tried`.
    /// A configured server on another host than `addr` (another node), else another port.
    pub(crate) fn another_node(&self, addr: SocketAddr) -> Option<SocketAddr> {
        let usable = |s: &&SocketAddr| !self.foreign.contains_key(*s);
        let other_host = self.servers.iter().filter(usable).find(|s| s.ip() != addr.ip());
        other_host.or_else(|| self.servers.iter().filter(usable).find(|s| **s != addr)).copied()
    }

    /// (Servers of another cluster are skipped; servers on a host the known map names come
    /// first: a host the map left is most likely down.)
    pub(crate) fn next_server(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let usable =
            |server: &SocketAddr| !tried.contains(server) && !self.foreign.contains_key(server);
        let first = self.servers.iter().copied().find(|s| usable(s) && self.names_host(s));
        first.or_else(|| self.servers.iter().copied().find(usable))
    }

    /// Whether the known map (if any) names a core on `server`'s host.
    fn names_host(&self, server: &SocketAddr) -> bool {
        self.map.as_ref().is_none_or(|map| {
            map.entries.iter().any(|e| {
                e.addr.ip() == server.ip() || e.replicas.iter().any(|r| r.addr.ip() == server.ip())
            })
        })
    }

    /// Notes that `addr` answered a request.
    pub(crate) fn note_answer(&mut self, addr: SocketAddr) {
        self.answered.insert(addr);
    }

    /// Whether `addr` ever answered.
    pub(crate) fn has_answered(&self, addr: SocketAddr) -> bool {
        self.answered.contains(&addr)
    }

    /// The token to put in requests to `addr` (0: none known).
    pub(crate) fn token(&self, addr: SocketAddr) -> u64 {
        self.tokens.get(&addr).copied().unwrap_or(0)
    }

    /// Remembers `addr`'s token from a reply.
    pub(crate) fn remember_token(&mut self, addr: SocketAddr, token: u64) {
        if token == 0 {
            return;
        }
        if self.tokens.len() >= ADDRESSES_MAX && !self.tokens.contains_key(&addr) {
            self.tokens.clear();
        }
        self.tokens.insert(addr, token);
    }

    /// The retransmission timeout of `class` requests to `addr`. A class without samples
    /// yet starts from the larger of `rto_initial` (backed off if it expired) and the
    /// timeouts of the classes sampled on that server: the path's round trip is part of every
    /// class's, so a first write to a distant server is not timed like a LAN read.
    pub(crate) fn rto(&self, addr: SocketAddr, class: RttClass) -> Duration {
        let Some(classes) = self.estimators.get(&addr) else {
            return self.fresh.rto();
        };
        let own = &classes[class.index()];
        if own.srtt().is_some() {
            return own.rto();
        }
        let sampled = classes.iter().filter(|estimator| estimator.srtt().is_some());
        sampled.map(RttEstimator::rto).fold(own.rto(), Duration::max)
    }

    /// `rto` after one more expiry.
    pub(crate) fn backoff(&self, rto: Duration) -> Duration {
        self.fresh.backoff(rto)
    }

    /// Folds a round-trip sample of a `class` request to `addr`, taken at `now`, into that
    /// estimate.
    pub(crate) fn on_rtt_sample(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        class: RttClass,
        rtt: Duration,
    ) {
        self.estimate_mut(addr, class).on_sample(now, rtt);
        self.sampled_last = Some((addr, class));
    }

    /// A `class` request to `addr` armed with `armed` expired without progress: the estimate
    /// may back off until its next sample (`RttEstimator::on_expiry`).
    pub(crate) fn on_expiry(&mut self, addr: SocketAddr, class: RttClass, armed: Duration) {
        self.estimate_mut(addr, class).on_expiry(armed);
    }

    fn estimate_mut(&mut self, addr: SocketAddr, class: RttClass) -> &mut RttEstimator {
        if self.estimators.len() >= ADDRESSES_MAX && !self.estimators.contains_key(&addr) {
            self.estimators.clear();
            self.sampled_last = None;
        }
        let classes = self.estimators.entry(addr).or_insert([self.fresh; RttClass::COUNT]);
        &mut classes[class.index()]
    }

    /// The estimator sampled last, a server's and a class's (none before any sample).
    pub(crate) fn latest_estimate(&self) -> Option<&RttEstimator> {
        let (addr, class) = self.sampled_last?;
        self.estimators.get(&addr).map(|classes| &classes[class.index()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{partition_range, MapEntry};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn router() -> Router {
        let fresh = RttEstimator::new(
            Duration::from_millis(5),
            Duration::from_millis(1),
            Duration::from_millis(200),
        );
        Router::new(vec![addr(1), addr(2)], fresh)
    }

    fn two_partition_map(epoch: u64) -> PartitionMap {
        let entries = (0..2)
            .map(|p| {
                let (hash_start, hash_end) = partition_range(p, 2);
                MapEntry::single(hash_start, hash_end, p, addr(10 + p as u16))
            })
            .collect();
        PartitionMap::new(epoch, entries)
    }

    #[test]
    fn keys_go_to_the_first_server_until_a_map_is_known() {
        let mut router = router();
        assert_eq!(router.route(b"k"), Route { addr: addr(1), partition: 0 });
        assert_eq!(router.install_map(two_partition_map(3), addr(1)), Ok(true));
        let expected = proto::partition_of(key_hash(b"k"), 2);
        assert_eq!(
            router.route(b"k"),
            Route { addr: addr(10 + expected as u16), partition: expected }
        );
        assert_eq!(router.epoch(), 3);
        assert_eq!(router.install_map(two_partition_map(2), addr(1)), Ok(false), "older: ignored");
    }

    #[test]
    fn scans_go_to_the_partition_owner() {
        let mut router = router();
        let scan = |partition| crate::request::Request::Scan { partition, after: Vec::new() };
        assert_eq!(router.route_request(&scan(1)), Route { addr: addr(1), partition: 1 });
        router.install_map(two_partition_map(1), addr(1)).unwrap();
        assert_eq!(router.route_request(&scan(1)), Route { addr: addr(11), partition: 1 });
        assert_eq!(router.route_request(&scan(0)), Route { addr: addr(10), partition: 0 });
    }

    #[test]
    fn failover_walks_the_configured_servers() {
        let router = router();
        assert_eq!(router.next_server(&[addr(1)]), Some(addr(2)));
        assert_eq!(router.next_server(&[addr(7)]), Some(addr(1)));
        assert_eq!(router.next_server(&[addr(1), addr(2)]), None);
    }

    #[test]
    fn classes_learn_apart_and_a_new_class_starts_from_the_path() {
        let mut router = router();
        let (read, write) = (RttClass::Read, RttClass::Write);
        let ms = Duration::from_millis;
        let mut now = Instant::now();
        let mut sample = |router: &mut Router, addr, class, rtt| {
            now += rtt;
            router.on_rtt_sample(now, addr, class, rtt);
        };
        assert_eq!(router.rto(addr(1), write), ms(5), "rto_initial");
        for _ in 0..50 {
            sample(&mut router, addr(1), read, Duration::from_micros(40));
        }
        let read_rto = router.rto(addr(1), read);
        assert!(read_rto < ms(2), "{read_rto:?}");
        assert_eq!(router.rto(addr(1), write), ms(5), "reads do not lower it");
        for _ in 0..50 {
            sample(&mut router, addr(1), write, ms(2));
        }
        assert_eq!(router.rto(addr(1), write), ms(3));
        assert_eq!(router.rto(addr(1), read), read_rto, "writes do not raise it");
        assert_eq!(router.latest_estimate().unwrap().srtt(), Some(ms(2)));
        // A distant server: its first writes wait at least as long as its reads do.
        sample(&mut router, addr(2), read, ms(30));
        assert_eq!(router.rto(addr(2), write), ms(90), "30 + 4 · 15");
    }

    #[test]
    fn a_map_of_another_cluster_is_refused_and_its_server_never_used() {
        let mut router = router();
        assert!(router.vouched_for(addr(2)), "no cluster known yet");
        let mut ours = two_partition_map(1);
        ours.cluster = 0xa;
        assert_eq!(router.install_map(ours.clone(), addr(1)), Ok(true));
        assert!(router.vouched_for(addr(1)) && router.vouched_for(addr(10)), "sender, entries");
        assert!(!router.vouched_for(addr(2)), "a configured server the map does not list");
        let mut theirs = two_partition_map(5);
        theirs.cluster = 0xb;
        let refused = router.install_map(theirs, addr(2));
        assert_eq!(refused, Err(Foreign { server: addr(2), cluster: 0xb, expected: 0xa }));
        assert_eq!(router.epoch(), 1, "not adopted, newer as it is");
        assert_eq!(router.next_server(&[addr(1)]), None, "the foreign server is skipped");
        assert_eq!(router.another_node(addr(1)), None);
        ours.epoch = 2;
        assert_eq!(router.install_map(ours, addr(3)), Ok(true), "the same cluster, anywhere");
        assert!(router.vouched_for(addr(3)));
    }

    #[test]
    fn tokens_are_per_address() {
        let mut router = router();
        router.remember_token(addr(1), 42);
        router.remember_token(addr(1), 0);
        assert_eq!((router.token(addr(1)), router.token(addr(2))), (42, 0));
    }
}
