//! The three verdicts, and a finding: one verdict with the sentence that justifies it.

use std::fmt;

/// How healthy a device or a host is. Ordered: `Healthy < Suspect < Failing`, so the worst of
/// several is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Verdict {
    /// Nothing read says anything against it.
    #[default]
    Healthy,
    /// A counter that predicts failure is non-zero, or a weak signal is growing: keep it, but
    /// place nothing new on it.
    Suspect,
    /// Failing now, or getting worse by the reading: move everything off it.
    Failing,
}

impl Verdict {
    /// `"healthy"`, `"suspect"` or `"failing"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Suspect => "suspect",
            Verdict::Failing => "failing",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule that fired: the verdict it asks for and a sentence naming the counter and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) verdict: Verdict,
    pub(crate) reason: String,
}

impl Finding {
    pub(crate) fn new(verdict: Verdict, reason: impl Into<String>) -> Finding {
        Finding { verdict, reason: reason.into() }
    }
}

/// The worst verdict among `findings` (healthy when there are none).
pub(crate) fn worst(findings: &[Finding]) -> Verdict {
    findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Healthy)
}
