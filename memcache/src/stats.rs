//! The `stats` reply: the counters memcached tools read, from every core of the node.

use crate::config::DoorConfig;
use crate::counters::{Counters, DoorStats};
use control::NodeStats;
use std::io::Write;

/// The reply to `stats` (or `stats settings`; any other argument gets just `END`).
pub(crate) fn render(
    arg: Option<&[u8]>,
    door: &DoorStats,
    node: &NodeStats,
    config: &DoorConfig,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    match arg {
        None => general(&mut out, door, node),
        Some(b"settings") => settings(&mut out, config, door),
        Some(_) => {}
    }
    out.extend_from_slice(b"END\r\n");
    out
}

fn general(out: &mut Vec<u8>, door: &DoorStats, node: &NodeStats) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let c = door.total();
    let cradle = node.snapshot().total();
    let mut stat = |name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(out, "STAT {name} {value}\r\n");
    };
    stat("pid", &std::process::id());
    stat("uptime", &now.saturating_sub(door.started_s));
    stat("time", &now);
    stat("version", &"1.6.0-cradle-0.1.0");
    stat("pointer_size", &64);
    stat("threads", &door.cores());
    stat("curr_items", &cradle.keys);
    stat("bytes", &cradle.live_bytes);
    stat("limit_maxbytes", &0);
    stat("evictions", &0);
    for (name, value) in Counters::NAMES.iter().zip(counter_values(&c)) {
        stat(name, &value);
    }
}

fn counter_values(c: &Counters) -> Vec<u64> {
    let mut values = Vec::with_capacity(Counters::NAMES.len());
    c.for_each(|v| values.push(v));
    values
}

fn settings(out: &mut Vec<u8>, config: &DoorConfig, door: &DoorStats) {
    let _ = write!(out, "STAT item_size_max {}\r\n", config.item_bytes_max);
    let _ = write!(out, "STAT maxconns {}\r\n", config.connections_max * door.cores() as usize);
    let _ = write!(out, "STAT flush_enabled {}\r\n", if config.flush_all { "yes" } else { "no" });
    let _ = write!(out, "STAT udpport_amplification_max {}\r\n", crate::frame::AMPLIFICATION_MAX);
    let _ = write!(out, "STAT binding_protocol ascii\r\n");
}
