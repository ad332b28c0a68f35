//! The core against fake servers over a simulated network that drops, duplicates and
//! reorders datagrams. Each run is deterministic for its seed; failures print the seed.

mod support;

use client::{Error, Request};
use proto::{flags, MapEntry, Opcode, PartitionMap, Status, FRAGMENT_BYTES, VALUE_BYTES_MAX};
use std::collections::HashSet;
use std::time::Duration;
use support::in_memory::bytes;
use support::sim::{config, server_addr, Sim};

const EVENTS_MAX: usize = 2_000_000;

fn put(key: &str, value: &[u8]) -> Request {
    Request::Put { key: key.as_bytes().to_vec(), value: value.to_vec() }
}

fn get(key: &str) -> Request {
    Request::Get { key: key.as_bytes().to_vec() }
}

#[test]
fn writes_complete_exactly_once_under_loss_and_duplication() {
    for seed in 0..20 {
        let mut config = config(1);
        config.attempts_per_server = 12;
        let mut sim = Sim::new(seed, config);
        sim.loss_percent = 15;
        sim.duplicate_percent = 15;
        // 1000-byte values: one write per datagram, so losses hit single writes.
        let ids: Vec<_> =
            (0..100).map(|i| sim.submit(put(&format!("k{i}"), &[i as u8; 1000]))).collect();
        let results = sim.run_all(EVENTS_MAX);
        assert_eq!(results.len(), ids.len(), "seed {seed}: every write completes once");
        for id in &ids {
            let reply = results[id].as_ref().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(reply.status, Status::Ok, "seed {seed}");
        }
        let server = &sim.servers[0];
        assert_eq!(server.applied, 100, "seed {seed}: resends reuse the tracking id");
        assert!(server.requests.len() > 100, "seed {seed}: the loss forced resends");
        for i in 0..100u8 {
            assert_eq!(server.store[format!("k{i}").as_bytes()].0, [i; 1000], "seed {seed}");
        }
    }
}

#[test]
fn resends_reuse_the_tracking_id_and_fail_only_after_the_budget() {
    let mut sim = Sim::new(1, config(1));
    sim.servers[0].silent = true;
    let id = sim.submit(put("k", b"v"));
    let (elapsed, result) = sim.run_until(id, EVENTS_MAX);
    match result {
        Err(Error::Timeout { attempts, server }) => {
            assert_eq!((attempts, server), (8, server_addr(0)));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let seen = &sim.servers[0].requests;
    assert_eq!(seen.len(), 8);
    let ids: HashSet<_> = seen.iter().map(|h| (h.client_id, h.tracking_id)).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same tracking id");
    // 5 + 10 + 20 + 40 + 80 + 160 + 200 + 200 ms of exponential backoff, capped at rto_max.
    assert!(elapsed >= Duration::from_millis(715), "failed early, after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(720), "failed late, after {elapsed:?}");
    let stats = sim.core.stats();
    assert_eq!((stats.retransmits, stats.timeouts), (7, 1));
}

#[test]
fn every_server_is_tried_before_failing() {
    let mut sim = Sim::new(1, config(2));
    sim.servers[0].silent = true;
    sim.servers[1].silent = true;
    let id = sim.submit(get("k"));
    let (_, result) = sim.run_until(id, EVENTS_MAX);
    assert!(matches!(result, Err(Error::Timeout { attempts: 16, .. })), "{result:?}");
    for server in &sim.servers {
        assert_eq!(server.requests.len(), 8);
        assert!(server
            .requests
            .iter()
            .all(|h| h.tracking_id == sim.servers[0].requests[0].tracking_id));
    }
}

/// The tracking id of every datagram sent so far (a request's first is sent at once).
fn only_tracking_id(sim: &Sim) -> u64 {
    let ids: HashSet<u64> = sim.sent.iter().flat_map(|(_, _, ids)| ids.iter().copied()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.into_iter().next().unwrap()
}

#[test]
fn nothing_carries_a_tracking_id_after_the_resend_window() {
    // Budgets that would run past the 2 s window: it closes in the middle of the third
    // server's (rto_max 300 ms: 915 ms per server), or right when the fourth would start
    // (default 200 ms: 715 ms per server, the fourth would start at 2,145 ms).
    for (servers, rto_max, per_server) in [(3, 300, [8, 8, 6, 0]), (4, 200, [8, 8, 8, 0])] {
        let mut config = config(servers);
        config.rto_max = Duration::from_millis(rto_max);
        let window = config.resend_window;
        assert_eq!(window, Duration::from_secs(2));
        let mut sim = Sim::new(1, config);
        for server in &mut sim.servers {
            server.silent = true;
        }
        let id = sim.submit(put("k", b"v"));
        let (elapsed, result) = sim.run_until(id, EVENTS_MAX);
        let sends = sim.sends_of(only_tracking_id(&sim));
        assert!(sends.iter().all(|&at| at < window), "sent after the window: {sends:?}");
        match result {
            Err(Error::Timeout { attempts, server }) => {
                assert_eq!(attempts as usize, sends.len(), "attempts so far");
                assert_eq!(server, server_addr(2), "failed on the third server");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        let seen: Vec<usize> = sim.servers.iter().map(|s| s.requests.len()).collect();
        assert_eq!(seen, per_server[..servers]);
        let late = Duration::from_millis(rto_max);
        assert!(elapsed >= window && elapsed <= window + late, "failed after {elapsed:?}");
        assert!(sim.run_all(EVENTS_MAX).is_empty());
        assert_eq!(sim.sends_of(sim.servers[0].requests[0].tracking_id), sends);
    }
}

#[test]
fn the_resend_window_ends_retransmissions_on_one_server() {
    let mut config = config(1);
    config.resend_window = Duration::from_millis(100);
    let mut sim = Sim::new(1, config);
    sim.servers[0].silent = true;
    let id = sim.submit(put("k", b"v"));
    let (elapsed, result) = sim.run_until(id, EVENTS_MAX);
    // Sent at 0, 5, 15, 35 and 75 ms; the timer after that fires at 155 ms.
    let ms: Vec<u128> =
        sim.sends_of(only_tracking_id(&sim)).iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [0, 5, 15, 35, 75]);
    assert!(matches!(result, Err(Error::Timeout { attempts: 5, .. })), "{result:?}");
    assert_eq!(elapsed, Duration::from_millis(155));
    let stats = sim.core.stats();
    assert_eq!((stats.retransmits, stats.timeouts), (4, 1));
}

#[test]
fn the_resend_window_bounds_a_fragmented_write() {
    // The link passes 32 KiB/s in bursts of 8 KiB: the first window loses its ACK_REQUEST
    // fragment to the policer, so no acknowledgement of progress comes before the 3 ms window
    // closes, and the fragments stop at it.
    let mut config = config(1);
    config.resend_window = Duration::from_millis(3);
    let mut sim = Sim::new(7, config);
    sim.loss_percent = 10;
    sim.rate_bytes_per_second = 32 << 10;
    sim.burst_bytes = 8 << 10;
    let id = sim.submit(put("big", &bytes(1, 1 << 20)));
    let (_, result) = sim.run_until(id, EVENTS_MAX);
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    let sends = sim.sends_of(only_tracking_id(&sim));
    assert!(sends.len() > 1, "{sends:?}");
    assert!(sends.iter().all(|&at| at < Duration::from_millis(3)), "{sends:?}");
    assert!(sim.run_all(EVENTS_MAX).is_empty());
    assert_eq!(sim.servers[0].applied, 0);
}

#[test]
fn failover_reaches_a_live_server() {
    let mut sim = Sim::new(1, config(2));
    sim.servers[0].silent = true;
    let reply = sim.call(put("k", b"v"));
    assert_eq!(reply.status, Status::Ok);
    assert_eq!((sim.servers[0].requests.len(), sim.servers[1].applied), (8, 1));
}

#[test]
fn busy_is_retried_for_a_second_and_then_reported() {
    let mut sim = Sim::new(1, config(1));
    sim.servers[0].busy = true;
    let id = sim.submit(put("k", b"v"));
    let (elapsed, result) = sim.run_until(id, EVENTS_MAX);
    assert!(matches!(result, Err(Error::Status(Status::Busy))), "{result:?}");
    // Pauses of 1, 2, 4, … 32 ms, then 32 ms each, for a second.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    let asked = sim.servers[0].requests.len();
    assert!((30..=40).contains(&asked), "asked {asked} times");
}

#[test]
fn retry_with_token_resends_at_once_with_the_token() {
    let mut sim = Sim::new(1, config(1));
    sim.servers[0].require_token = true;
    let token = sim.servers[0].token;
    let id = sim.submit(get("k"));
    let (elapsed, result) = sim.run_until(id, EVENTS_MAX);
    assert_eq!(result.unwrap().status, Status::NotFound);
    assert!(elapsed < Duration::from_millis(1), "resent at once, not on the timer");
    let reply = sim.call(put("k", b"v"));
    assert_eq!(reply.status, Status::Ok);
    let tokens: Vec<_> = sim.servers[0].requests.iter().map(|h| h.token).collect();
    assert_eq!(tokens, [0, token, token], "the token rides along from then on");
    let tracking: Vec<_> = sim.servers[0].requests.iter().map(|h| h.tracking_id).collect();
    assert_eq!(tracking[0], tracking[1]);
    let stats = sim.core.stats();
    assert_eq!((stats.token_retries, stats.retransmits), (1, 0));
}

#[test]
fn a_server_that_keeps_asking_for_a_token_spends_the_budget() {
    let mut sim = Sim::new(1, config(1));
    sim.servers[0].refuse_tokens = true;
    let id = sim.submit(get("k"));
    let (_, result) = sim.run_until(id, EVENTS_MAX);
    assert!(matches!(result, Err(Error::Timeout { attempts: 8, .. })), "{result:?}");
    // The first challenge is free: 8 counted attempts plus one.
    assert_eq!(sim.servers[0].requests.len(), 9);
}

#[test]
fn one_mib_round_trips_through_fragments_with_ten_percent_loss() {
    for seed in 0..4 {
        let mut sim = Sim::new(seed, config(1));
        sim.loss_percent = 10;
        let value = bytes(seed, 1 << 20);
        let id = sim.submit(put("big", &value));
        let (_, result) = sim.run_until(id, EVENTS_MAX);
        let version = result.unwrap_or_else(|e| panic!("seed {seed}: {e}")).version;
        assert_eq!(sim.servers[0].applied, 1, "seed {seed}");
        let id = sim.submit(get("big"));
        let (_, result) = sim.run_until(id, EVENTS_MAX);
        let reply = result.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(reply.version, version, "seed {seed}");
        assert!(reply.value == value, "seed {seed}: value differs");
        let ranges = sim.servers[0].requests.iter().filter(|h| h.has(flags::RANGE)).count();
        assert!(ranges >= 31, "seed {seed}: the rest was pulled with RANGE requests");
    }
}

#[test]
fn oversized_put_sends_one_fragment_and_fails_too_large() {
    let mut sim = Sim::new(1, config(1));
    let id = sim.submit(put("huge", &vec![1; VALUE_BYTES_MAX + 1]));
    let (_, result) = sim.run_until(id, EVENTS_MAX);
    assert!(matches!(result, Err(Error::Status(Status::TooLarge))), "{result:?}");
    let seen = &sim.servers[0].requests;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].has(flags::FRAGMENT) && seen[0].has(flags::ACK_REQUEST));
    assert_eq!(seen[0].total_len as usize, VALUE_BYTES_MAX + 1);
}

#[test]
fn wrong_owner_redirects_to_the_hint_and_refreshes_the_map() {
    let mut sim = Sim::new(1, config(2));
    let owner = server_addr(1);
    let entry = MapEntry::single(0, u64::MAX, 0, owner);
    sim.servers[0].map = PartitionMap::new(5, vec![entry]);
    sim.servers[0].redirect_to = Some(owner);
    let reply = sim.call(put("k", b"v"));
    assert_eq!(reply.status, Status::Ok);
    assert_eq!((sim.servers[0].applied, sim.servers[1].applied), (0, 1));
    sim.run_all(EVENTS_MAX);
    assert_eq!(sim.core.map().map(|m| m.epoch), Some(5), "the map was refreshed");
    assert!(sim.servers[0].requests.iter().any(|h| h.opcode == Opcode::Map as u8));
    // Routed by the map from now on: straight to the owner.
    let before = sim.servers[0].requests.len();
    sim.call(get("k"));
    assert_eq!(sim.servers[0].requests.len(), before);
    assert_eq!(sim.core.stats().redirects, 1);
}

#[test]
fn a_value_changed_mid_read_restarts_it_with_a_new_tracking_id() {
    let mut sim = Sim::new(1, config(1));
    let value = bytes(3, 100 * FRAGMENT_BYTES);
    sim.servers[0].store_value(b"k", value.clone());
    sim.servers[0].change_after_first_batch = true;
    let reply = sim.call(get("k"));
    let changed: Vec<u8> = value.iter().map(|b| b.wrapping_add(1)).collect();
    assert!(reply.value == changed, "the read returns the value as it is now");
    let gets: HashSet<_> = sim.servers[0]
        .requests
        .iter()
        .filter(|h| !h.has(flags::RANGE))
        .map(|h| h.tracking_id)
        .collect();
    assert_eq!(gets.len(), 2, "restarted under a new tracking id");
    assert_eq!(sim.core.stats().read_restarts, 1);
}

#[test]
fn multi_gets_share_datagrams_and_all_complete() {
    let mut sim = Sim::new(1, config(1));
    for i in 0..10 {
        sim.servers[0].store_value(format!("k{i}").as_bytes(), vec![i; 20]);
    }
    let ids: Vec<_> = (0..10).map(|i| sim.submit(get(&format!("k{i}")))).collect();
    let results = sim.run_all(EVENTS_MAX);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(results[id].as_ref().unwrap().value, vec![i as u8; 20]);
    }
    assert_eq!(sim.servers[0].datagrams, 1, "ten GETs in one datagram");
}
