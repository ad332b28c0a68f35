//! What a run measured: counters, latency histograms, the per-second progress line and the
//! final summary (text or one JSON object).

use super::engine::Outcome;
use hdrhistogram::Histogram;

/// Error codes tracked per kind; larger codes share the last bucket.
pub(super) const ERROR_CODES: usize = 16;
/// Largest latency recorded exactly (60 s); longer ones are clamped.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// The keys of one answered request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Keys {
    /// Keys the request read (1 but for a multi-get).
    pub(super) read: u8,
    /// Of those, answered "no such key".
    pub(super) missed: u8,
}

/// Counts of one measured run.
#[derive(Clone, Debug)]
pub(super) struct Counters {
    /// Successful replies that arrived inside the measured window.
    pub(super) ok: u64,
    /// GETs answered "no such key" inside the window (for a multi-get: at least one of its
    /// keys; the others were found).
    pub(super) misses: u64,
    /// Keys answered (found or not) by the `ok` and `misses` requests.
    pub(super) keys: u64,
    /// Of those, keys answered "no such key".
    pub(super) key_misses: u64,
    /// Replies with a failure status, in the window.
    pub(super) errors: u64,
    /// Failures by protocol error code.
    pub(super) error_codes: [u64; ERROR_CODES],
    /// Requests unanswered after the timeout (their slot was freed).
    pub(super) timeouts: u64,
    /// Replies after their request timed out, or for unknown ids.
    pub(super) late: u64,
    /// Reply messages that did not parse.
    pub(super) malformed: u64,
    /// Start of the measured window, ns on the engine's clock.
    pub(super) started_ns: u64,
    /// End of the measured window.
    pub(super) finished_ns: u64,
    /// Every latency recorded (ns), including replies that arrived during the final drain.
    pub(super) latency: Histogram<u64>,
}

impl Counters {
    /// Measured seconds.
    pub(super) fn seconds(&self) -> f64 {
        self.finished_ns.saturating_sub(self.started_ns) as f64 / 1e9
    }

    /// Completed (answered) operations per second in the window.
    pub(super) fn ops_per_sec(&self) -> f64 {
        let seconds = self.seconds();
        if seconds <= 0.0 {
            return 0.0;
        }
        (self.ok + self.misses) as f64 / seconds
    }

    /// Keys of the completed (answered) operations per second in the window.
    pub(super) fn keys_per_sec(&self) -> f64 {
        let seconds = self.seconds();
        if seconds <= 0.0 {
            return 0.0;
        }
        self.keys as f64 / seconds
    }
}

/// Records completions into the run's histogram and into a per-second one.
pub(super) struct Recorder {
    /// The run's totals.
    pub(super) counters: Counters,
    interval: Histogram<u64>,
    interval_ops: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

impl Recorder {
    /// Empty counters.
    pub(super) fn new() -> Recorder {
        Recorder {
            counters: Counters {
                ok: 0,
                misses: 0,
                keys: 0,
                key_misses: 0,
                errors: 0,
                error_codes: [0; ERROR_CODES],
                timeouts: 0,
                late: 0,
                malformed: 0,
                started_ns: 0,
                finished_ns: 0,
                latency: histogram(),
            },
            interval: histogram(),
            interval_ops: 0,
        }
    }

    /// Forgets the totals (end of the warm-up); the window starts at `now_ns`.
    pub(super) fn reset(&mut self, now_ns: u64) {
        let interval = std::mem::replace(&mut self.interval, histogram());
        let interval_ops = self.interval_ops;
        *self = Recorder::new();
        self.interval = interval;
        self.interval_ops = interval_ops;
        self.counters.started_ns = now_ns;
    }

    /// One answered request (of `keys`). Every one shows in the progress line; `measuring`
    /// is false during the warm-up, and `in_window` false for replies drained after the end
    /// (their latency counts, their throughput does not).
    pub(super) fn record(
        &mut self,
        outcome: Outcome,
        keys: Keys,
        latency_ns: u64,
        measuring: bool,
        in_window: bool,
    ) {
        let latency_ns = latency_ns.clamp(1, LATENCY_NS_MAX);
        self.interval.saturating_record(latency_ns);
        self.interval_ops += 1;
        if !measuring {
            return;
        }
        self.counters.latency.saturating_record(latency_ns);
        if !in_window {
            return;
        }
        let c = &mut self.counters;
        if matches!(outcome, Outcome::Ok | Outcome::Miss) {
            c.keys += u64::from(keys.read);
            c.key_misses += u64::from(keys.missed);
        }
        match outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Miss => c.misses += 1,
            Outcome::Error(code) => {
                c.errors += 1;
                c.error_codes[usize::from(code).min(ERROR_CODES - 1)] += 1;
            }
            Outcome::Timeout => c.timeouts += 1,
        }
    }

    /// The totals, once the run is over.
    pub(super) fn finish(self) -> Counters {
        self.counters
    }
}

/// The line printed each second on stderr.
pub(super) struct Progress {
    label: String,
    next_ns: u64,
    last_ns: u64,
    second: u64,
}

impl Progress {
    /// First line one second after `start_ns`.
    pub(super) fn new(label: String, start_ns: u64) -> Progress {
        Progress { label, next_ns: start_ns + 1_000_000_000, last_ns: start_ns, second: 0 }
    }

    /// Prints and restarts the per-second histogram when a second has passed.
    pub(super) fn tick(
        &mut self,
        now_ns: u64,
        recorder: &mut Recorder,
        measuring: bool,
        outstanding: usize,
    ) {
        if now_ns < self.next_ns {
            return;
        }
        self.second += 1;
        let elapsed = (now_ns - self.last_ns) as f64 / 1e9;
        let h = &recorder.interval;
        let c = &recorder.counters;
        eprintln!(
            "{}{} {:>3}s {:>10.0} ops/s  p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>8.1} µs  \
             errors {} timeouts {} in flight {}",
            self.label,
            if measuring { "" } else { " (warm-up)" },
            self.second,
            recorder.interval_ops as f64 / elapsed,
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            us(h.max()),
            c.errors,
            c.timeouts,
            outstanding,
        );
        recorder.interval.reset();
        recorder.interval_ops = 0;
        self.last_ns = now_ns;
        self.next_ns = now_ns + 1_000_000_000;
    }
}

/// Nanoseconds as microseconds.
pub(super) fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Latency percentiles of a run, in microseconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) p9999: f64,
    pub(super) max: f64,
    pub(super) mean: f64,
}

impl Percentiles {
    /// Reads the percentiles off `h` (all zero when it is empty).
    pub(super) fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                p9999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Percentiles {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}
