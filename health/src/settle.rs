//! Hysteresis: a verdict gets worse at once and better only after it has been better for a
//! number of consecutive readings, so a host on the edge of a rule does not flap.

use crate::verdict::Verdict;

/// The published verdict of a series of measured ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    readings: u32,
    current: Verdict,
    better_for: u32,
    worst_while_better: Verdict,
}

impl Settle {
    /// Improves only after `readings` consecutive better readings (0 counts as 1: improve on
    /// the first better reading). Starts healthy.
    pub fn new(readings: u32) -> Settle {
        Settle {
            readings: readings.max(1),
            current: Verdict::Healthy,
            better_for: 0,
            worst_while_better: Verdict::Healthy,
        }
    }

    /// Takes one measured verdict and returns the published one: the measured one if it is
    /// as bad or worse; after enough better readings in a row, the worst of those; otherwise
    /// the published one unchanged.
    pub fn step(&mut self, measured: Verdict) -> Verdict {
        if measured >= self.current {
            self.current = measured;
            self.better_for = 0;
            return self.current;
        }
        self.worst_while_better =
            if self.better_for == 0 { measured } else { self.worst_while_better.max(measured) };
        self.better_for += 1;
        if self.better_for >= self.readings {
            self.current = self.worst_while_better;
            self.better_for = 0;
        }
        self.current
    }

    /// The published verdict.
    pub fn current(&self) -> Verdict {
        self.current
    }

    /// While a better verdict waits: how many better readings were seen, of how many needed.
    pub fn waiting(&self) -> Option<(u32, u32)> {
        (self.better_for > 0).then_some((self.better_for, self.readings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Failing as F, Healthy as H, Suspect as S};

    #[test]
    fn worse_at_once_better_only_after_settling() {
        // (settle readings, measured verdicts, published verdicts)
        let table: &[(u32, &[Verdict], &[Verdict])] = &[
            (3, &[H, H, H], &[H, H, H]),
            (3, &[S], &[S]),
            (3, &[F, H, H, H, H], &[F, F, F, H, H]),
            // A flapping host stays at its worst.
            (3, &[F, H, F, H, H, F, H], &[F, F, F, F, F, F, F]),
            (3, &[S, H, S, H, H, H], &[S, S, S, S, S, H]),
            // Better by steps: the worst of the settling readings is published.
            (3, &[F, S, H, H, H, H, H], &[F, F, F, S, S, S, H]),
            (3, &[F, H, S, H], &[F, F, F, S]),
            // Worse while settling restarts the count.
            (2, &[F, S, F, S, S], &[F, F, F, F, S]),
            (2, &[S, H, F, H, H], &[S, S, F, F, H]),
            (1, &[F, H, S, H], &[F, H, S, H]),
            (0, &[F, H], &[F, H]),
        ];
        for (settle, measured, published) in table {
            let mut hysteresis = Settle::new(*settle);
            let got: Vec<Verdict> = measured.iter().map(|&m| hysteresis.step(m)).collect();
            assert_eq!(&got, published, "settle {settle}, measured {measured:?}");
        }
    }

    #[test]
    fn waiting_says_how_far_it_got() {
        let mut hysteresis = Settle::new(3);
        hysteresis.step(F);
        assert_eq!(hysteresis.waiting(), None);
        hysteresis.step(H);
        assert_eq!(hysteresis.waiting(), Some((1, 3)));
        hysteresis.step(H);
        hysteresis.step(H);
        assert_eq!((hysteresis.waiting(), hysteresis.current()), (None, H));
    }
}
