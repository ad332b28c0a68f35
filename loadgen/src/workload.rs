//! What the generator asks for: keys, operations, arrival times. Seeded, no clock.

use super::engine::{Feed, Op, Outcome};

/// Bytes of every benchmark key: `bench:` and ten decimal digits.
pub(super) const KEY_BYTES: usize = 16;

/// All keys of a run, rendered once into one flat buffer.
#[derive(Debug)]
pub(super) struct Keys {
    bytes: Vec<u8>,
}

impl Keys {
    /// Keys `bench:0000000000` .. for `count` keys.
    pub(super) fn new(count: usize) -> Keys {
        let mut bytes = Vec::with_capacity(count * KEY_BYTES);
        for i in 0..count {
            bytes.extend_from_slice(format!("bench:{i:010}").as_bytes());
        }
        debug_assert_eq!(bytes.len(), count * KEY_BYTES);
        Keys { bytes }
    }

    /// Number of keys.
    pub(super) fn len(&self) -> usize {
        self.bytes.len() / KEY_BYTES
    }

    /// The bytes of key `index`.
    pub(super) fn get(&self, index: u32) -> &[u8] {
        let start = index as usize * KEY_BYTES;
        &self.bytes[start..start + KEY_BYTES]
    }
}

/// xorshift64*: fast, seeded, good enough for picking keys and arrival gaps.
#[derive(Clone, Debug)]
pub(super) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(super) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(super) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// How keys are drawn.
#[derive(Clone, Debug)]
pub(super) enum KeyChooser {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        n: u64,
    },
    /// Zipfian over ranks (Gray et al., as in YCSB): rank 0 is the hottest key.
    Zipf(Zipf),
}

impl KeyChooser {
    /// The next key index.
    pub(super) fn next(&self, rng: &mut Rng) -> u32 {
        match self {
            KeyChooser::Uniform { n } => rng.below(*n) as u32,
            KeyChooser::Zipf(z) => z.next(rng),
        }
    }
}

/// Precomputed constants of a zipfian distribution over `n` items with skew `theta`.
#[derive(Clone, Debug)]
pub(super) struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipf {
    /// Constants for `n` items (costs O(n) once) and `theta` in (0, 1).
    pub(super) fn new(n: u64, theta: f64) -> Zipf {
        assert!(n > 0 && theta > 0.0 && theta < 1.0, "zipf n {n} theta {theta}");
        let zeta = |count: u64| (1..=count).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        let nf = n as f64;
        Zipf {
            n: nf,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta: (1.0 - (2.0 / nf).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
        }
    }

    fn next(&self, rng: &mut Rng) -> u32 {
        let u = rng.next_f64();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n as u32 - 1);
        }
        let rank = self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (rank as u64).min(self.n as u64 - 1) as u32
    }
}

/// The measured workload: random keys, gets and sets in a ratio.
#[derive(Debug)]
pub(super) struct RandomFeed {
    rng: Rng,
    keys: KeyChooser,
    /// Probability of a GET, scaled to 2^32 (1.0 = all gets).
    get_threshold: u64,
}

impl RandomFeed {
    /// A feed drawing keys from `keys` with probability `get_ratio` of a GET.
    pub(super) fn new(seed: u64, keys: KeyChooser, get_ratio: f64) -> RandomFeed {
        RandomFeed {
            rng: Rng::new(seed),
            keys,
            get_threshold: (get_ratio.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64,
        }
    }
}

impl Feed for RandomFeed {
    fn next(&mut self) -> Option<(Op, u32)> {
        let op = if (self.rng.next_u64() >> 32) < self.get_threshold { Op::Get } else { Op::Set };
        Some((op, self.keys.next(&mut self.rng)))
    }

    fn next_key(&mut self) -> Option<u32> {
        Some(self.keys.next(&mut self.rng))
    }
}

/// The preload: a SET of every key, each retried until stored or out of attempts.
#[derive(Debug)]
pub(super) struct PreloadFeed {
    pending: Vec<u32>,
    attempts: Vec<u8>,
    attempts_max: u8,
    /// Keys given up on.
    pub(super) failed: u64,
    /// Keys stored.
    pub(super) stored: u64,
}

impl PreloadFeed {
    /// Sets keys `0..count`, each up to `attempts_max` times.
    pub(super) fn new(count: usize, attempts_max: u8) -> PreloadFeed {
        PreloadFeed {
            pending: (0..count as u32).rev().collect(),
            attempts: vec![0; count],
            attempts_max,
            failed: 0,
            stored: 0,
        }
    }
}

impl Feed for PreloadFeed {
    fn next(&mut self) -> Option<(Op, u32)> {
        let key = self.pending.pop()?;
        self.attempts[key as usize] += 1;
        Some((Op::Set, key))
    }

    fn completed(&mut self, key: u32, outcome: Outcome) {
        if outcome == Outcome::Ok {
            self.stored += 1;
        } else if self.attempts[key as usize] < self.attempts_max {
            self.pending.push(key);
        } else {
            self.failed += 1;
        }
    }

    fn exhausted(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Poisson arrivals: exponential gaps with mean `1 / rate`, in nanoseconds.
#[derive(Debug)]
pub(super) struct Arrivals {
    rng: Rng,
    mean_gap_ns: f64,
    /// Intended send time of the next request.
    pub(super) next_ns: f64,
}

impl Arrivals {
    /// Arrivals at `rate` per second starting at `start_ns`.
    pub(super) fn new(seed: u64, rate: f64, start_ns: u64) -> Arrivals {
        Arrivals {
            rng: Rng::new(seed ^ 0xA5A5_5A5A),
            mean_gap_ns: 1e9 / rate,
            next_ns: start_ns as f64,
        }
    }

    /// Moves to the following arrival.
    pub(super) fn advance(&mut self) {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u = 1.0 - self.rng.next_f64();
        self.next_ns += -u.ln() * self.mean_gap_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_fixed_width() {
        let keys = Keys::new(12);
        assert_eq!(keys.len(), 12);
        assert_eq!(keys.get(11), b"bench:0000000011");
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(1000, 0.99);
        let mut rng = Rng::new(7);
        let mut hits = vec![0u32; 1000];
        for _ in 0..100_000 {
            hits[z.next(&mut rng) as usize] += 1;
        }
        // Rank 0 takes about 1/zeta(1000) ≈ 13 % of draws; the tail far less.
        assert!(hits[0] > 10_000 && hits[0] < 16_000, "{}", hits[0]);
        assert!(hits[0] > 10 * hits[500]);
    }

    #[test]
    fn uniform_and_arrivals_have_the_right_means() {
        let mut rng = Rng::new(3);
        let mean = (0..100_000).map(|_| rng.below(100) as f64).sum::<f64>() / 100_000.0;
        assert!((mean - 49.5).abs() < 0.5, "{mean}");
        let mut arrivals = Arrivals::new(1, 1000.0, 0);
        for _ in 0..10_000 {
            arrivals.advance();
        }
        // 10,000 arrivals at 1,000/s take about 10 s.
        assert!((arrivals.next_ns / 1e9 - 10.0).abs() < 0.5, "{}", arrivals.next_ns);
    }

    #[test]
    fn preload_retries_then_gives_up() {
        let mut feed = PreloadFeed::new(2, 2);
        assert_eq!(feed.next(), Some((Op::Set, 0)));
        assert_eq!(feed.next(), Some((Op::Set, 1)));
        feed.completed(0, Outcome::Ok);
        feed.completed(1, Outcome::Timeout);
        assert_eq!(feed.next(), Some((Op::Set, 1)));
        feed.completed(1, Outcome::Timeout);
        assert!(feed.exhausted());
        assert_eq!((feed.stored, feed.failed), (1, 1));
    }
}
