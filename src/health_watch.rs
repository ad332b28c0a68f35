//! The node's hardware-health watch (issue #10): a thread, off the serving loops, that reads
//! the host's SMART and EDAC counters every `interval` (`health::read`), judges them with the
//! node's own error counters (`health::Monitor`), publishes the report for STATS and
//! `cradle status` (`NodeStats::set_health`), and hands the verdict to the cluster agent
//! (`ClusterView::health`), whose heartbeats carry it to the map group's leader: that is where
//! a suspect host's primaries are handed on and a failing one is drained
//! (`control::cluster::health`).

use control::cluster::{ClusterView, Health};
use control::NodeStats;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `cradle node`'s health settings (`--health-*`, `[health]`).
#[derive(Clone, Debug)]
pub(crate) struct HealthOptions {
    /// What to read (no saved JSON: run `smartctl` on this machine).
    pub(crate) sources: health::Sources,
    /// Time between two readings.
    pub(crate) interval: Duration,
    /// Readings in a row a better verdict must hold before it is published.
    pub(crate) settle_readings: u32,
}

/// The running watch.
pub(crate) struct HealthWatch {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl HealthWatch {
    /// Starts the thread; its first reading is taken at once.
    pub(crate) fn spawn(
        options: HealthOptions,
        stats: Arc<NodeStats>,
        cluster: Option<Arc<ClusterView>>,
    ) -> Result<HealthWatch, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cradle-health".into())
            .spawn(move || watch(&options, &stats, cluster.as_deref(), &stopping))
            .map_err(|e| format!("cannot start the health thread: {e}"))?;
        Ok(HealthWatch { thread, stop })
    }

    /// Ends the thread: at once if it waits for its next reading, after the reading if it is
    /// taking one. The node does not wait for that (a smartctl run on a dying disk may take
    /// its whole 30 s timeout; the thread writes nothing that must outlive the node).
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

fn watch(
    options: &HealthOptions,
    stats: &NodeStats,
    cluster: Option<&ClusterView>,
    stop: &AtomicBool,
) {
    let mut monitor = health::Monitor::new(options.settle_readings);
    let mut said: Option<(health::Verdict, Vec<String>)> = None;
    while !stop.load(Ordering::Acquire) {
        let readings = health::read(&options.sources);
        let report = monitor.observe(&readings, &own_signals(stats));
        let verdict = report.verdict;
        if let Some(view) = cluster {
            view.health.store(of(verdict) as u8, Ordering::Relaxed);
        }
        let mut json = report.to_json();
        json["errors"] = readings.errors.clone().into();
        stats.set_health(json);
        let now = (verdict, report.reasons.clone());
        // (A healthy first reading goes without saying: STATS has it.)
        let first_healthy = said.is_none() && verdict == health::Verdict::Healthy;
        if said.as_ref() != Some(&now) && !first_healthy {
            let why = match report.reasons.is_empty() {
                true => String::new(),
                false => format!(": {}", report.reasons.join("; ")),
            };
            eprintln!("cradle: hardware health {}{why}", verdict.as_str());
            for error in &readings.errors {
                eprintln!("cradle: health: {error}");
            }
        }
        said = Some(now);
        std::thread::park_timeout(options.interval);
    }
}

/// The node's own evidence about its host, from its counters. A log poisoned by a failed
/// write or flush is the node's I/O error; a log quarantined at recovery is a checksum that
/// did not match; an fdatasync that took longer than `FSYNC_OUTLIER` is an outlier (a loaded
/// VM's disk takes up to a few hundred milliseconds; a dying one, seconds).
fn own_signals(stats: &NodeStats) -> health::OwnSignals {
    let total = stats.snapshot().total();
    let syncs = storage::latency::sync_latency();
    let first_slow = storage::latency::bucket_of(FSYNC_OUTLIER.as_nanos() as u64) + 1;
    health::OwnSignals {
        io_errors: 0,
        checksum_failures: total.quarantined,
        poisoned_logs: total.poisoned,
        fsync_outliers: syncs.counts[first_slow..].iter().sum(),
    }
}

/// An fdatasync slower than this counts against the host (rounded up to a histogram bucket:
/// more than 1.05 s).
const FSYNC_OUTLIER: Duration = Duration::from_secs(1);

/// The cluster's name for a verdict.
fn of(verdict: health::Verdict) -> Health {
    match verdict {
        health::Verdict::Healthy => Health::Healthy,
        health::Verdict::Suspect => Health::Suspect,
        health::Verdict::Failing => Health::Failing,
    }
}
