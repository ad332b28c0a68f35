//! Round-trip estimation and the retransmission timeout of RFC 6298.

use std::time::Duration;

/// Smoothed round-trip time and variance of one server, and the timeout derived from them:
/// `rto = srtt + 4·rttvar`, clamped to `[min, max]`. Callers feed it only samples from
/// requests sent once (Karn's rule) and back off per request with `backoff`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    /// An estimator without samples: its timeout is `initial`.
    pub(crate) fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        assert!(min <= max, "rto bounds {min:?} > {max:?}");
        RttEstimator { srtt: None, rttvar: Duration::ZERO, rto: initial.clamp(min, max), min, max }
    }

    /// Folds in one round-trip sample (RFC 6298 section 2, alpha = 1/8, beta = 1/4).
    pub(crate) fn on_sample(&mut self, rtt: Duration) {
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
        self.rto = (srtt + self.rttvar * 4).clamp(self.min, self.max);
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

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut rtt = estimator();
        assert_eq!(rtt.rto(), ms(5));
        assert_eq!(rtt.srtt(), None);
        rtt.on_sample(ms(2));
        assert_eq!(rtt.srtt(), Some(ms(2)));
        // rto = 2 + 4 * 1
        assert_eq!(rtt.rto(), ms(6));
    }

    #[test]
    fn later_samples_smooth_with_rfc_weights() {
        let mut rtt = estimator();
        rtt.on_sample(ms(8));
        rtt.on_sample(ms(16));
        // rttvar = 3/4 * 4 + 1/4 * 8 = 5; srtt = 7/8 * 8 + 1/8 * 16 = 9; rto = 9 + 20
        assert_eq!(rtt.srtt(), Some(ms(9)));
        assert_eq!(rtt.rto(), ms(29));
    }

    #[test]
    fn steady_samples_converge_and_clamp_to_the_floor() {
        let mut rtt = estimator();
        for _ in 0..200 {
            rtt.on_sample(Duration::from_micros(50));
        }
        assert_eq!(rtt.srtt(), Some(Duration::from_micros(50)));
        assert_eq!(rtt.rto(), ms(1), "clamped to rto_min");
    }

    #[test]
    fn timeout_is_clamped_to_the_ceiling() {
        let mut rtt = estimator();
        rtt.on_sample(ms(150));
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
}
