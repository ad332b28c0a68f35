//! Round-trip estimation and the retransmission timeout of RFC 6298, per class of request.

use crate::request::Request;
use std::time::{Duration, Instant};

/// What a request waits for at the server: requests of one class to one server share an
/// estimator, and classes do not mix, because their service times differ by two orders of
/// magnitude. One estimator for both sat between them: after a run of reads it timed writes
/// out at the 1 ms floor, and every write's reply came after its resend, so no write sample
/// (Karn's rule) could ever correct it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RttClass {
    /// Answered from memory or the page cache, tens of µs of service: GET (reference GETs,
    /// and the RANGE pulls of a fragmented reply), SCAN, CHUNK, PING, MAP, STATS.
    Read,
    /// Answered once the write is as durable as its partition's class asks: with `flushed`
    /// after the group commit's fdatasync (1–3 ms on an SSD), with `memory` at once. PUT,
    /// DELETE, CAS, and every window of a fragmented write (the last one waits for the
    /// commit; windows give no samples).
    Write,
}

impl RttClass {
    /// Classes, for per-class tables.
    pub(crate) const COUNT: usize = 2;

    /// The class of `request`.
    pub(crate) fn of(request: &Request) -> RttClass {
        match request {
            Request::Put { .. }
            | Request::Delete { .. }
            | Request::Cas { .. }
            | Request::PutWith { .. }
            | Request::CasWith { .. }
            | Request::Incr { .. }
            | Request::Touch { .. } => RttClass::Write,
            Request::Get { .. }
            | Request::GetRef { .. }
            | Request::Scan { .. }
            | Request::Chunk { .. }
            | Request::ChunkRange { .. }
            | Request::Ping { .. }
            | Request::Map { .. }
            | Request::Stats { .. } => RttClass::Read,
        }
    }

    /// The class's slot in a per-class table.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Smoothed round-trip time and variance of one server and class, and the timeout derived
/// from them: `rto = srtt + max(min, 4·rttvar)` (RFC 6298 with its granularity term G =
/// `min`), clamped to `[min, max]`. Callers feed it only samples from requests sent once
/// (Karn's rule), back off per request with `backoff`, and report expiries with `on_expiry`,
/// which keeps the backed-off timeout until the next sample (Karn's algorithm, RFC 6298 rule
/// 5.7): without it, a class whose round trip exceeds its timeout would never get a sample.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The variance term of the timeout: `4·rttvar` at its largest of the recent round trips.
    /// It rises with `rttvar` at once and falls a quarter of the way to the last round trip's
    /// largest `4·rttvar` once per round trip (`srtt`), not per sample (Linux's `mdev_max`):
    /// RFC 6298's gains assume about one sample per round trip, and a client with 64 requests
    /// in flight takes 64, which would forget a slow spell's variance within a fraction of
    /// one round trip (RFC 7323 appendix G).
    variance: Duration,
    /// The largest `4·rttvar` of the current round trip, and when that round trip ends.
    round_max: Duration,
    round_end: Option<Instant>,
    rto: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    /// An estimator without samples: its timeout is `initial`.
    pub(crate) fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        assert!(min <= max, "rto bounds {min:?} > {max:?}");
        let rto = initial.clamp(min, max);
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            variance: Duration::ZERO,
            round_max: Duration::ZERO,
            round_end: None,
            rto,
            min,
            max,
        }
    }

    /// Folds in one round-trip sample taken at `now` (RFC 6298 section 2, alpha = 1/8,
    /// beta = 1/4); it ends a back-off.
    pub(crate) fn on_sample(&mut self, now: Instant, rtt: Duration) {
        let srtt = match self.srtt {
            None => {
                self.rttvar = rtt / 2;
                rtt
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + deviation) / 4;
                (srtt * 7 + rtt) / 8
            }
        };
        self.srtt = Some(srtt);
        self.update_variance(now, srtt);
        // The variance term is at least `min`: steady samples drive rttvar to 0, and a timeout
        // at the mean itself would fire for every reply a little slower than usual.
        self.rto = (srtt + self.variance.max(self.min)).clamp(self.min, self.max);
    }

    /// Raises `variance` to the new `4·rttvar`, and lets it fall once per round trip.
    fn update_variance(&mut self, now: Instant, srtt: Duration) {
        let term = self.rttvar * 4;
        self.round_max = self.round_max.max(term);
        self.variance = self.variance.max(term);
        if self.round_end.is_some_and(|end| now < end) {
            return;
        }
        if self.round_end.is_some() {
            self.variance -= (self.variance - self.round_max) / 4;
        }
        self.round_max = Duration::ZERO;
        self.round_end = Some(now + srtt);
    }

    /// A request armed with `armed` timed out without progress. When `armed` was at least the
    /// current timeout, the estimate was too short: the timeout backs off from `armed` and
    /// stays there until the next sample. Requests armed before an earlier back-off (many in
    /// flight expiring together) do not back it off again.
    pub(crate) fn on_expiry(&mut self, armed: Duration) {
        if armed >= self.rto {
            self.rto = self.backoff(armed);
        }
    }

    /// The current retransmission timeout.
    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round-trip time, once there is a sample.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The timeout after one more expiry: doubled, at most `max` (RFC 6298 rule 5.5).
    pub(crate) fn backoff(&self, rto: Duration) -> Duration {
        (rto * 2).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn estimator() -> RttEstimator {
        RttEstimator::new(ms(5), ms(1), ms(200))
    }

    /// Feeds `samples`, each taken as its reply arrives to a request sent when the previous
    /// reply arrived (one request in flight), armed with the current timeout.
    struct Clock {
        now: Instant,
    }

    impl Clock {
        fn new() -> Clock {
            Clock { now: Instant::now() }
        }

        fn feed(&mut self, rtt: &mut RttEstimator, samples: &[Duration]) {
            for &sample in samples {
                self.now += sample;
                rtt.on_sample(self.now, sample);
            }
        }
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut rtt = estimator();
        assert_eq!(rtt.rto(), ms(5));
        assert_eq!(rtt.srtt(), None);
        Clock::new().feed(&mut rtt, &[ms(2)]);
        assert_eq!(rtt.srtt(), Some(ms(2)));
        // rto = 2 + max(1, 4 * 1)
        assert_eq!(rtt.rto(), ms(6));
    }

    #[test]
    fn later_samples_smooth_with_rfc_weights() {
        let mut rtt = estimator();
        Clock::new().feed(&mut rtt, &[ms(8), ms(16)]);
        // rttvar = 3/4 * 4 + 1/4 * 8 = 5; srtt = 7/8 * 8 + 1/8 * 16 = 9; rto = 9 + 20
        assert_eq!(rtt.srtt(), Some(ms(9)));
        assert_eq!(rtt.rto(), ms(29));
    }

    #[test]
    fn steady_samples_keep_the_floor_above_the_mean() {
        let mut rtt = estimator();
        Clock::new().feed(&mut rtt, &[Duration::from_micros(50); 200]);
        assert_eq!(rtt.srtt(), Some(Duration::from_micros(50)));
        assert_eq!(rtt.rto(), Duration::from_micros(1_050), "srtt + rto_min");
        let mut rtt = estimator();
        Clock::new().feed(&mut rtt, &[ms(2); 200]);
        assert_eq!(rtt.srtt(), Some(ms(2)));
        assert_eq!(rtt.rto(), ms(3), "not the mean itself: rttvar went to 0");
    }

    #[test]
    fn the_variance_term_falls_per_round_trip_not_per_sample() {
        // 64 requests in flight: 64 samples per round trip of about 4 ms.
        let mut rtt = estimator();
        let mut now = Instant::now();
        let mut round = |rtt: &mut RttEstimator, sample: Duration| {
            now += sample;
            for _ in 0..64 {
                rtt.on_sample(now, sample);
            }
        };
        for _ in 0..20 {
            round(&mut rtt, ms(4));
        }
        let calm = rtt.rto();
        assert!(calm < ms(6), "{calm:?}");
        // One slow round trip: its 64 samples leave rttvar high, and 64 fast ones right after
        // would bring an RFC 6298 estimator (one sample per round trip in mind) back to the
        // calm timeout within that one round trip. Here the variance term stays for a few.
        round(&mut rtt, ms(40));
        let spike = rtt.rto();
        assert!(spike > ms(40), "{spike:?}");
        round(&mut rtt, ms(4));
        assert!(rtt.rto() > ms(30), "one round trip later: {:?}", rtt.rto());
        for _ in 0..30 {
            round(&mut rtt, ms(4));
        }
        assert!(rtt.rto() < ms(6), "calm again: {:?}", rtt.rto());
    }

    #[test]
    fn timeout_is_clamped_to_the_ceiling() {
        let mut rtt = estimator();
        Clock::new().feed(&mut rtt, &[ms(150)]);
        assert_eq!(rtt.rto(), ms(200));
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let rtt = estimator();
        let mut rto = rtt.rto();
        let mut seen = vec![];
        for _ in 0..8 {
            seen.push(rto.as_millis());
            rto = rtt.backoff(rto);
        }
        assert_eq!(seen, [5, 10, 20, 40, 80, 160, 200, 200]);
    }

    #[test]
    fn an_expiry_backs_off_once_and_the_next_sample_undoes_it() {
        let mut rtt = estimator();
        let now = Instant::now();
        rtt.on_sample(now, ms(2));
        assert_eq!(rtt.rto(), ms(6));
        rtt.on_expiry(ms(6));
        assert_eq!(rtt.rto(), ms(12), "kept for the next requests");
        // Others armed with the old 6 ms expire in the same burst: one back-off, not one each.
        rtt.on_expiry(ms(6));
        rtt.on_expiry(ms(6));
        assert_eq!(rtt.rto(), ms(12));
        // A request already backed off to 12 ms expires again: the estimate is still short.
        rtt.on_expiry(ms(12));
        assert_eq!(rtt.rto(), ms(24));
        // A sample ends the back-off: rttvar = 3/4 * 1, but the variance term is still the
        // round trip's largest, 4 ms: 2 + 4.
        rtt.on_sample(now, ms(2));
        assert_eq!(rtt.rto(), ms(6));
        for _ in 0..6 {
            rtt.on_expiry(rtt.rto());
        }
        assert_eq!(rtt.rto(), ms(200), "at most rto_max");
    }

    #[test]
    fn requests_fall_into_their_class() {
        let key = || b"k".to_vec();
        let server = "127.0.0.1:7000".parse().unwrap();
        let writes = [
            Request::Put { key: key(), value: vec![1] },
            Request::Delete { key: key() },
            Request::Cas { key: key(), expected_version: 0, value: vec![1] },
        ];
        assert!(writes.iter().all(|r| RttClass::of(r) == RttClass::Write));
        let reads = [
            Request::Get { key: key() },
            Request::GetRef { key: key() },
            Request::Scan { partition: 0, after: key() },
            Request::Chunk { server, hash: [0; 32] },
            Request::ChunkRange { server, hash: [0; 32], offset: 0, len: 1 },
            Request::Ping { server },
            Request::Map { server },
            Request::Stats { server },
        ];
        assert!(reads.iter().all(|r| RttClass::of(r) == RttClass::Read));
    }
}
