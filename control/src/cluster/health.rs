//! The map group leader's hardware-health policy (issue #10), sans-IO: given the map and what
//! each member's heartbeats say of it (alive, fresh from a restart, its health verdict), the
//! next change the policy asks for, and what it holds back and why.
//!
//! - A **suspect** member (its disks or memory are getting worse) receives no new replica,
//!   and its primaries are handed to backups on healthier members (the primary becomes a
//!   backup of the one promoted: a planned failover, with the promotion's probe and wait).
//! - A **failing** member is **drained**: a learner is built elsewhere for each partition it
//!   holds, then its replicas leave the map once the partition has its replication factor on
//!   the other members (primaries handed over first, as for a suspect member).
//! - A drain never takes a partition below its replication factor: a failing member is
//!   drained only if every partition it holds can keep `replicas` copies on the members not
//!   being drained (the ones it holds now, plus healthy members that could take a learner).
//!   Otherwise the policy holds back and says so (Ceph's lesson: a wrong prediction must not
//!   empty the cluster). Members are considered in order, each with the ones before it
//!   already draining, so two failing members of a cluster that can absorb only one drain one
//!   at a time.

use super::{ClusterSpec, PartitionMap};
use proto::{MapEntry, Replica, Role};

/// A member's hardware verdict, as its own health monitor decides it (the `health` crate
/// reads SMART and EDAC counters; `cradle node` passes the verdict to its agent, which says it
/// in every heartbeat).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Health {
    /// Nothing wrong, or nothing read.
    #[default]
    Healthy = 0,
    /// Getting worse: places no new replica, hands its primaries on.
    Suspect = 1,
    /// Failing now: drained.
    Failing = 2,
}

impl Health {
    /// From its byte (`as u8`); `None` for any other.
    pub fn from_u8(byte: u8) -> Option<Health> {
        match byte {
            0 => Some(Health::Healthy),
            1 => Some(Health::Suspect),
            2 => Some(Health::Failing),
            _ => None,
        }
    }

    /// `healthy`, `suspect` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Suspect => "suspect",
            Health::Failing => "failing",
        }
    }
}

/// What the leader knows of one member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberState {
    /// Heard from within the failover time.
    pub alive: bool,
    /// Restarted, not yet rebuilt (takes no new replica either).
    pub fresh: bool,
    /// Its verdict.
    pub health: Health,
}

impl MemberState {
    /// Whether a new replica (a learner) may be placed on it.
    pub fn placeable(&self) -> bool {
        self.alive && !self.fresh && self.health == Health::Healthy
    }
}

/// The policy's answer for one map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The change to propose, with the sentence that says why.
    pub change: Option<(PartitionMap, String)>,
    /// Members being drained (failing, and the cluster can absorb it).
    pub draining: Vec<usize>,
    /// Why a failing member is not drained, one sentence each.
    pub holding_back: Vec<String>,
}

/// The health policy applied to `map` (see the module comment). `members` has one state per
/// member of `spec`. Learners that a drain needs are placed by [`super::with_learners`] with
/// `Plan::draining` excluded from the count, after this change (if any) is made.
pub fn plan(spec: &ClusterSpec, map: &PartitionMap, members: &[MemberState]) -> Plan {
    let mut draining: Vec<usize> = Vec::new();
    let mut holding_back = Vec::new();
    for m in
        (0..members.len()).filter(|&m| members[m].alive && members[m].health == Health::Failing)
    {
        if !holds_any(spec, map, m) {
            continue; // drained already
        }
        match short_partition(spec, map, members, &draining, m) {
            None => draining.push(m),
            Some((partition, could_keep)) => holding_back.push(format!(
                "member {} ({}) is failing but is not drained: partition {partition} would \
                 keep {could_keep} of its {} replicas on the other members",
                m + 1,
                spec.members[m],
                spec.replicas
            )),
        }
    }
    let change = handover(spec, map, members).or_else(|| drain(spec, map, &draining)).map(
        |(mut next, why)| {
            next.epoch = map.epoch + 1;
            (next, why)
        },
    );
    Plan { change, draining, holding_back }
}

/// A partition that draining `m` (with `draining` drained already) would leave short of its
/// replication factor, and how many replicas it could keep.
fn short_partition(
    spec: &ClusterSpec,
    map: &PartitionMap,
    members: &[MemberState],
    draining: &[usize],
    m: usize,
) -> Option<(u32, usize)> {
    let out = |x: usize| x == m || draining.contains(&x);
    map.entries.iter().filter(|e| holders(spec, e).any(|(x, _)| x == m)).find_map(|e| {
        // (A learner being built on a member that stays will be a backup there.)
        let kept = holders(spec, e).filter(|&(x, _)| !out(x) && members[x].alive).count();
        let spare = (0..members.len())
            .filter(|&x| {
                !out(x) && members[x].placeable() && !holders(spec, e).any(|(h, _)| h == x)
            })
            .count();
        (kept + spare < spec.replicas).then_some((e.partition, kept + spare))
    })
}

/// The members holding a replica of `e`, with its role (`None`: the primary).
fn holders<'a>(
    spec: &'a ClusterSpec,
    e: &'a MapEntry,
) -> impl Iterator<Item = (usize, Option<Role>)> + 'a {
    let primary = spec.member_of(e.addr).map(|m| (m, None));
    let others =
        e.replicas.iter().filter_map(|r| spec.member_of(r.addr).map(|m| (m, Some(r.role))));
    primary.into_iter().chain(others)
}

/// Whether member `m` holds any replica (primary, backup or learner) by `map`.
pub(super) fn holds_any(spec: &ClusterSpec, map: &PartitionMap, m: usize) -> bool {
    map.entries.iter().any(|e| holders(spec, e).any(|(x, _)| x == m))
}

/// Every primary on a suspect or failing member that has a backup on a healthier member
/// (alive, not fresh) handed to the healthiest such backup; the old primary stays a backup.
fn handover(
    spec: &ClusterSpec,
    map: &PartitionMap,
    members: &[MemberState],
) -> Option<(PartitionMap, String)> {
    let mut next = map.clone();
    let mut handed = Vec::new();
    for entry in &mut next.entries {
        let Some(m) = spec.member_of(entry.addr) else { continue };
        let health = members[m].health;
        if health == Health::Healthy || !members[m].alive {
            continue;
        }
        let better = entry
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.role == Role::Backup)
            .filter_map(|(i, r)| Some((i, members.get(spec.member_of(r.addr)?)?)))
            .filter(|(_, s)| s.alive && !s.fresh && s.health < health)
            .min_by_key(|(i, s)| (s.health, *i));
        let Some((i, _)) = better.map(|(i, s)| (i, *s)) else { continue };
        let old = entry.addr;
        entry.addr = entry.replicas.remove(i).addr;
        entry.replicas.push(Replica { addr: old, role: Role::Backup });
        handed.push(entry.partition);
    }
    let names: Vec<String> = handed.iter().map(u32::to_string).collect();
    (!handed.is_empty()).then(|| {
        (
            next,
            format!(
                "primaries on unhealthy members handed to backups: partitions {}",
                names.join(" ")
            ),
        )
    })
}

/// The replicas on `draining` members left out wherever the partition keeps its replication
/// factor without them (learners there always: they hold nothing yet). A primary stays until
/// it is handed over.
fn drain(
    spec: &ClusterSpec,
    map: &PartitionMap,
    draining: &[usize],
) -> Option<(PartitionMap, String)> {
    let out = |addr| spec.member_of(addr).is_some_and(|m| draining.contains(&m));
    let mut next = map.clone();
    let mut left = Vec::new();
    for entry in &mut next.entries {
        let kept = usize::from(!out(entry.addr))
            + entry.replicas.iter().filter(|r| r.role == Role::Backup && !out(r.addr)).count();
        let before = entry.replicas.len();
        entry.replicas.retain(|r| !out(r.addr) || (r.role == Role::Backup && kept < spec.replicas));
        if entry.replicas.len() != before {
            left.push(entry.partition);
        }
    }
    let names: Vec<String> = left.iter().map(u32::to_string).collect();
    let who: Vec<String> = draining.iter().map(|m| format!("member {}", m + 1)).collect();
    (!left.is_empty()).then(|| {
        (
            next,
            format!(
                "{} failing, drained: its replicas of partitions {} leave the map",
                who.join(", "),
                names.join(" ")
            ),
        )
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{with_backups, with_learners};
    use super::*;
    use crate::peer::ClusterKey;
    use std::net::SocketAddr;

    /// A bootstrap cluster of `nodes` on 127.0.0.1, .2, … (one core, 6 partitions).
    pub(in crate::cluster) fn spec(nodes: usize, replicas: usize) -> ClusterSpec {
        let key = ClusterKey::from_file_bytes(&[7; 32]).expect("32 bytes");
        ClusterSpec {
            members: (0..nodes)
                .map(|n| SocketAddr::from(([127, 0, 0, 1 + n as u8], 7000)))
                .collect(),
            voters: nodes,
            me: 0,
            join: None,
            cores: 1,
            partitions: 6,
            replicas,
            cluster_id: key.cluster_id(),
            key,
            detect_ns: 1_000_000_000,
            tick_ns: 10_000_000,
            heartbeat_ns: 100_000_000,
        }
    }

    fn states(verdicts: &[Health]) -> Vec<MemberState> {
        verdicts.iter().map(|&health| MemberState { alive: true, fresh: false, health }).collect()
    }

    /// The members holding partition `p`: primary first, then (member, role) of the others.
    fn placement(spec: &ClusterSpec, map: &PartitionMap, p: u32) -> (usize, Vec<(usize, Role)>) {
        let e = map.entries.iter().find(|e| e.partition == p).expect("the partition");
        let others = e.replicas.iter().map(|r| (spec.member_of(r.addr).unwrap(), r.role));
        (spec.member_of(e.addr).unwrap(), others.collect())
    }

    fn primaries_on(spec: &ClusterSpec, map: &PartitionMap, m: usize) -> usize {
        map.entries.iter().filter(|e| spec.member_of(e.addr) == Some(m)).count()
    }

    fn holds(spec: &ClusterSpec, map: &PartitionMap, m: usize) -> bool {
        holds_any(spec, map, m)
    }

    use Health::{Failing, Healthy, Suspect};

    #[test]
    fn a_suspect_members_primaries_go_to_its_healthiest_backups_and_it_stays_a_backup() {
        let spec = spec(3, 3);
        let map = spec.initial_map();
        // Partition 1: primary on member 1, backups on 2 then 0.
        assert_eq!(placement(&spec, &map, 1), (1, vec![(2, Role::Backup), (0, Role::Backup)]));
        let plan = plan(&spec, &map, &states(&[Healthy, Suspect, Suspect]));
        let (next, why) = plan.change.expect("a handover");
        assert!(why.contains("handed to backups"), "{why}");
        assert_eq!(next.epoch, map.epoch + 1);
        // Member 1's primaries went to member 0, the only healthy one, even where member 2
        // was the first backup; member 2's too.
        assert_eq!(placement(&spec, &next, 1), (0, vec![(2, Role::Backup), (1, Role::Backup)]));
        assert_eq!(primaries_on(&spec, &next, 0), 6);
        assert!(plan.draining.is_empty() && plan.holding_back.is_empty());
        // Nothing more to hand over, and no learner anywhere: nothing left to do.
        let again = super::plan(&spec, &next, &states(&[Healthy, Suspect, Suspect]));
        assert_eq!(again.change, None);
    }

    #[test]
    fn no_handover_to_a_backup_as_unhealthy_fresh_or_silent() {
        let spec = spec(2, 2);
        let map = spec.initial_map();
        let mut members = states(&[Suspect, Suspect]);
        assert_eq!(plan(&spec, &map, &members).change, None, "as unhealthy");
        members[1].health = Healthy;
        members[1].fresh = true;
        assert_eq!(plan(&spec, &map, &members).change, None, "fresh");
        members[1].fresh = false;
        members[1].alive = false;
        assert_eq!(plan(&spec, &map, &members).change, None, "silent");
        members[1].alive = true;
        let (next, _) = plan(&spec, &map, &members).change.expect("a handover");
        assert_eq!(primaries_on(&spec, &next, 0), 0);
        // A failing primary goes to a suspect backup: better than staying.
        let members = states(&[Failing, Suspect]);
        let (next, _) = plan(&spec, &map, &members).change.expect("a handover");
        assert_eq!(primaries_on(&spec, &next, 0), 0);
    }

    #[test]
    fn suspect_and_failing_members_take_no_new_replica() {
        let spec = spec(4, 3);
        let mut map = spec.initial_map();
        // Partition 0 (members 0, 1, 2) loses member 1: short of a replica.
        map.entries[0].replicas.remove(0);
        let members = states(&[Healthy, Healthy, Healthy, Suspect]);
        let placeable = |m: usize| members[m].placeable();
        let next = with_learners(&spec, &map, placeable, |_| true).expect("a learner");
        assert_eq!(placement(&spec, &next, 0).1, vec![(2, Role::Backup), (1, Role::Learner)]);
        // With members 1 and 3 unhealthy, no one can take it.
        let members = states(&[Healthy, Failing, Healthy, Suspect]);
        assert_eq!(with_learners(&spec, &map, |m| members[m].placeable(), |_| true), None);
    }

    #[test]
    fn a_drain_that_would_go_below_the_replication_factor_is_held_back_and_said() {
        // RF 3 on 3 members: no member can be drained.
        let spec = spec(3, 3);
        let map = spec.initial_map();
        let plan = plan(&spec, &map, &states(&[Healthy, Failing, Failing]));
        assert!(plan.draining.is_empty());
        assert_eq!(plan.holding_back.len(), 2, "{:?}", plan.holding_back);
        for (why, m) in plan.holding_back.iter().zip([2, 3]) {
            assert!(why.starts_with(&format!("member {m} ")), "{why}");
            assert!(why.contains("would keep 2 of its 3 replicas"), "{why}");
        }
        // Their primaries still go to the healthy member; no replica leaves the map.
        let (next, _) = plan.change.expect("a handover");
        assert_eq!(primaries_on(&spec, &next, 0), 6);
        assert!(next.entries.iter().all(|e| e.replicas.len() == 2));
    }

    #[test]
    fn failing_members_are_drained_only_while_the_healthy_ones_can_take_their_replicas() {
        let failing = |nodes: usize, rf: usize, verdicts: &[Health]| {
            let spec = spec(nodes, rf);
            plan(&spec, &spec.initial_map(), &states(verdicts))
        };
        // RF 3 on 5 members, 2 failing: the 3 healthy ones hold every partition.
        let plan = failing(5, 3, &[Healthy, Failing, Failing, Healthy, Healthy]);
        assert_eq!((plan.draining, plan.holding_back.len()), (vec![1, 2], 0));
        // 3 failing, 2 healthy: one at a time. Member 2's partitions can keep 3 replicas
        // with the failing members 1 and 3 still holding theirs; with member 2 drained,
        // neither of those can go.
        let plan = failing(5, 3, &[Healthy, Failing, Failing, Failing, Healthy]);
        assert_eq!((plan.draining, plan.holding_back.len()), (vec![2], 2));
        // RF 3 on 4 members, 2 failing: none.
        let plan = failing(4, 3, &[Healthy, Failing, Healthy, Failing]);
        assert_eq!((plan.draining.len(), plan.holding_back.len()), (0, 2));
        // RF 2 on 4 members: both can go.
        let plan = failing(4, 2, &[Healthy, Failing, Healthy, Failing]);
        assert_eq!((plan.draining, plan.holding_back.len()), (vec![1, 3], 0));
        // A suspect member keeps what it holds (it counts) but takes nothing new: member 1
        // can go, its replicas to member 0; member 3's partitions would then need member 2
        // to take a replica it already holds, or member 1.
        let plan = failing(4, 3, &[Healthy, Failing, Suspect, Healthy]);
        assert_eq!(plan.draining.len() + plan.holding_back.len(), 1);
    }

    /// Runs the leader's health decisions on `map` (learners built at once) until nothing
    /// changes; checks that no partition ever has fewer in-sync replicas than it started with
    /// (or the replication factor). Returns the final map and the number of changes.
    fn settle(
        spec: &ClusterSpec,
        mut map: PartitionMap,
        members: &[MemberState],
    ) -> (PartitionMap, usize) {
        let in_sync = |map: &PartitionMap, p: usize| {
            1 + map.entries[p].replicas.iter().filter(|r| r.role == Role::Backup).count()
        };
        let floor: Vec<usize> =
            (0..map.entries.len()).map(|p| in_sync(&map, p).min(spec.replicas)).collect();
        for changes in 0..50 {
            let plan = plan(spec, &map, members);
            let next = match plan.change {
                Some((next, _)) => Some(next),
                None => with_learners(
                    spec,
                    &map,
                    |m| members[m].placeable(),
                    |m| !plan.draining.contains(&m),
                )
                .or_else(|| {
                    let learners: Vec<(u32, SocketAddr)> = map
                        .entries
                        .iter()
                        .flat_map(|e| {
                            e.replicas
                                .iter()
                                .filter(|r| r.role == Role::Learner)
                                .map(|r| (e.partition, r.addr))
                        })
                        .collect();
                    with_backups(&map, &learners)
                }),
            };
            let Some(next) = next else { return (map, changes) };
            for (p, &floor) in floor.iter().enumerate() {
                assert!(in_sync(&next, p) >= floor, "partition {p} below {floor}: {next:?}");
            }
            map = next;
        }
        panic!("the health policy did not settle: {map:?}");
    }

    #[test]
    fn a_failing_member_is_drained_through_learners_without_a_partition_going_short() {
        for (nodes, rf) in [(3, 2), (4, 3), (5, 3), (3, 1), (5, 2)] {
            let spec = spec(nodes, rf);
            let mut verdicts = vec![Healthy; nodes];
            verdicts[1] = Failing;
            let (map, changes) = settle(&spec, spec.initial_map(), &states(&verdicts));
            assert!(
                !holds(&spec, &map, 1),
                "{nodes} members, RF {rf}: member 1 still holds: {map:?}"
            );
            assert!(changes >= 3, "handover, learners, backups, drain: {changes}");
            for e in &map.entries {
                assert_eq!(1 + e.replicas.len(), rf, "{nodes} members, RF {rf}: {e:?}");
                assert!(e.replicas.iter().all(|r| r.role == Role::Backup));
            }
        }
    }

    #[test]
    fn a_drain_under_way_is_not_held_back_by_the_learners_it_placed() {
        // RF 2 on 3 members, member 1 failing: once a learner of its partitions is placed on
        // a healthy member, that member is no longer spare, but the learner will stand in.
        let spec = spec(3, 2);
        let members = states(&[Healthy, Failing, Healthy]);
        let map = spec.initial_map();
        let (map, _) = plan(&spec, &map, &members).change.expect("a handover first");
        let placeable = |m: usize| members[m].placeable();
        let with = with_learners(&spec, &map, placeable, |m| m != 1).expect("learners");
        let plan = plan(&spec, &with, &members);
        assert_eq!((plan.draining, plan.holding_back), (vec![1], Vec::<String>::new()));
    }

    #[test]
    fn a_member_drained_already_is_neither_draining_nor_held_back() {
        let spec = spec(3, 2);
        let members = states(&[Healthy, Failing, Healthy]);
        let (map, _) = settle(&spec, spec.initial_map(), &members);
        let plan = plan(&spec, &map, &members);
        assert_eq!(plan, Plan::default());
    }
}
