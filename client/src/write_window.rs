//! The sender side of a fragmented write: go-back-N windows of fragments acknowledged by
//! cumulative PARTIAL replies.

use proto::{fragment_count, VALUE_BYTES_MAX};
use std::ops::Range;

/// Fragments sent per window; the last carries ACK_REQUEST.
pub(crate) const WINDOW_FRAGMENTS: u32 = 32;

/// Which fragments of a write are in flight.
#[derive(Clone, Debug)]
pub(crate) struct WriteWindow {
    frag_count: u32,
    window_fragments: u32,
    start: u32,
    probe_outstanding: bool,
}

impl WriteWindow {
    /// A window over a `total_len`-byte value. A value over `VALUE_BYTES_MAX` is sent one
    /// fragment at a time: the server answers its first fragment TOO_LARGE.
    pub(crate) fn new(total_len: u32) -> Self {
        let oversized = total_len as usize > VALUE_BYTES_MAX;
        WriteWindow {
            frag_count: fragment_count(total_len),
            window_fragments: if oversized { 1 } else { WINDOW_FRAGMENTS },
            start: 0,
            probe_outstanding: false,
        }
    }

    /// The fragments of the current window.
    pub(crate) fn window(&self) -> Range<u32> {
        self.start..self.start.saturating_add(self.window_fragments).min(self.frag_count)
    }

    /// Fragments of the whole value.
    pub(crate) fn frag_count(&self) -> u32 {
        self.frag_count
    }

    /// The fragment a timer resends with ACK_REQUEST; the next PARTIAL answers it.
    pub(crate) fn probe(&mut self) -> u32 {
        self.probe_outstanding = true;
        self.window().end - 1
    }

    /// Starts over from the first fragment (a new server holds none of them).
    pub(crate) fn restart(&mut self) {
        self.start = 0;
        self.probe_outstanding = false;
    }

    /// Takes a PARTIAL naming `first_missing`; returns whether to send the (new) window, and
    /// whether that is progress: the server acknowledged fragments past the ones we knew it
    /// had, which restarts the request's retry budget and resend window
    /// (`InFlight::note_progress`). A repeat of the last acknowledgement moves nothing unless
    /// it answers a probe (then the window was lost and goes again, and that is no progress),
    /// so duplicated replies do not multiply windows, and a server that keeps answering
    /// without taking fragments does not keep a write alive.
    pub(crate) fn on_partial(&mut self, first_missing: u32) -> Option<bool> {
        if first_missing >= self.frag_count {
            return None;
        }
        let advanced = first_missing > self.start;
        if !advanced && !self.probe_outstanding {
            return None;
        }
        self.start = first_missing;
        self.probe_outstanding = false;
        Some(advanced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::FRAGMENT_BYTES;

    #[test]
    fn windows_go_back_to_the_first_missing_fragment() {
        let mut window = WriteWindow::new((100 * FRAGMENT_BYTES) as u32);
        assert_eq!(window.window(), 0..32);
        assert_eq!(window.on_partial(32), Some(true));
        assert_eq!(window.window(), 32..64);
        assert_eq!(window.on_partial(40), Some(true));
        assert_eq!(window.window(), 40..72);
        assert_eq!(window.on_partial(40), None, "a duplicate moves nothing");
        assert_eq!(window.on_partial(35), None, "a stale acknowledgement moves nothing");
        assert_eq!(window.probe(), 71);
        assert_eq!(window.on_partial(40), Some(false), "a probe's answer resends the window");
        assert_eq!(window.on_partial(96), Some(true));
        assert_eq!(window.window(), 96..100);
        assert_eq!(window.on_partial(100), None, "complete writes end with a final reply");
        window.restart();
        assert_eq!(window.window(), 0..32);
    }

    #[test]
    fn oversized_values_send_one_fragment() {
        let mut window = WriteWindow::new(VALUE_BYTES_MAX as u32 + 1);
        assert_eq!(window.window(), 0..1);
        assert_eq!(window.probe(), 0);
    }
}
