//! The state of one request in flight.

use crate::assembly::Assembly;
use crate::request::Request;
use crate::rtt::RttClass;
use crate::write_window::WriteWindow;
use proto::Status;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How a request's exchanges look.
#[derive(Debug)]
pub(crate) enum Phase {
    /// One message, one reply (DELETE, PING, writes that fit a datagram).
    Single,
    /// A write sent as fragment windows.
    Write(WriteWindow),
    /// A read whose reply may come in fragments (GET, MAP, STATS).
    Read(ReadState),
}

/// Progress of a read.
#[derive(Debug, Default)]
pub(crate) struct ReadState {
    /// The fragments received, once the first one arrived.
    pub(crate) assembly: Option<Assembly>,
    /// One past the highest fragment asked for so far.
    pub(crate) range_end: u32,
    /// The fragments carried REF_ONLY: the value is a blob reference.
    pub(crate) reference: bool,
}

impl ReadState {
    /// Back to nothing received (a new server, or the value changed).
    pub(crate) fn reset(&mut self) {
        *self = ReadState::default();
    }
}

/// One request and its retransmission state.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) request: Request,
    pub(crate) tracking_id: u64,
    /// Issued by the core itself (a map refresh); its completion is not surfaced.
    pub(crate) internal: bool,
    pub(crate) target: SocketAddr,
    pub(crate) partition: u32,
    /// Servers left behind: budget spent, unavailable, or redirected away from.
    pub(crate) tried: Vec<SocketAddr>,
    pub(crate) attempts_on_server: u32,
    pub(crate) attempts_total: u32,
    pub(crate) redirects: u32,
    pub(crate) restarts: u32,
    pub(crate) token_retry_used: bool,
    /// WRONG_OWNER came without a hint: route again by the map at the next occasion.
    pub(crate) reroute: bool,
    /// The current server answers BUSY: since when, and how many times.
    pub(crate) busy: Option<(Instant, u32)>,
    /// The last server tried refused it (ICMP unreachable: nothing listens there).
    pub(crate) refused: bool,
    /// Failing over to `target`, a configured server not yet known to be of the client's
    /// cluster: nothing is sent to it until its map says it is (`ClientCore::vouch`).
    pub(crate) awaiting_vouch: bool,
    /// Which of the server's estimators times it and learns from it.
    pub(crate) class: RttClass,
    /// The current timeout; doubles on each counted expiry.
    pub(crate) rto: Duration,
    /// When its timer fires next.
    pub(crate) deadline: Option<Instant>,
    /// The caller's deadline (`RequestOptions::deadline`): every timer is armed no later, and
    /// the request fails with `Error::DeadlineExceeded` when it fires at or after it.
    pub(crate) give_up_at: Option<Instant>,
    pub(crate) sent_at: Instant,
    /// When `tracking_id` was first sent.
    pub(crate) first_sent: Instant,
    /// When the current resend window opened: `first_sent`, or the last acknowledgement of
    /// progress (see `note_progress`). Nothing carries the tracking id after `resend_window`
    /// more.
    pub(crate) window_start: Instant,
    /// The exchange went out once and a reply to it would be an unambiguous RTT sample.
    pub(crate) rtt_sample_open: bool,
    /// Fragments moved forward since the timer was armed: its expiry is not a lost attempt.
    pub(crate) progress: bool,
    /// BUSY seen on the current server: the error to report if the budget runs out.
    pub(crate) last_status: Option<Status>,
    pub(crate) phase: Phase,
}

impl InFlight {
    /// Whether a reply to the current exchange, sent once, is a clean round-trip sample: one
    /// message answered by one, or a read's first exchange (its first fragment). Only such
    /// exchanges back their class's estimate off when they expire (only a sample can undo it)
    /// and follow it while it grows. Windows and RANGE pulls, answered by many datagrams, keep
    /// the timeout they were armed with.
    pub(crate) fn exchange_samples(&self) -> bool {
        match &self.phase {
            Phase::Single => true,
            Phase::Read(read) => read.assembly.is_none(),
            Phase::Write(_) => false,
        }
    }

    /// Fragments moved at `now`: the retry budget on this server starts over (it bounds
    /// attempts in a row without progress, so long transfers over lossy paths do not run out of
    /// it), and so does the resend window, so a transfer is bounded by how long it goes without
    /// progress, not by its size over a speed floor.
    ///
    /// Why a write may do this (its completion record is the server's to forget): progress is
    /// a PARTIAL acknowledgement whose first missing fragment advanced. A server sends PARTIAL
    /// only for a write it has not completed (once completed, it answers from the record), and
    /// it creates the record at completion. So the last progress acknowledgement left the
    /// server before the record existed, reached us within the network's delay, and nothing is
    /// sent later than `resend_window` after that: every datagram of the write reaches the
    /// server within `resend_window` plus a round trip of the record's creation, which the
    /// server's `completion_ttl` covers (5 s against 2 s by default). Reads have no record:
    /// their window only bounds how long the client keeps trying.
    pub(crate) fn note_progress(&mut self, now: Instant) {
        self.progress = true;
        self.attempts_on_server = 1;
        self.window_start = now;
    }

    /// `at`, or the caller's deadline when that comes first: a timer armed for `at`.
    pub(crate) fn timer_at(&self, at: Instant) -> Instant {
        self.give_up_at.map_or(at, |give_up_at| at.min(give_up_at))
    }

    /// Whether the caller's deadline has passed at `now`.
    pub(crate) fn past_deadline(&self, now: Instant) -> bool {
        self.give_up_at.is_some_and(|give_up_at| now >= give_up_at)
    }

    /// Whether the resend window is over at `now`.
    pub(crate) fn window_closed(&self, now: Instant, resend_window: Duration) -> bool {
        now >= self.window_start + resend_window
    }

    /// Before a move to `target`: a write going back to a server it left gets its first
    /// window back. That server may have completed the write (its final reply lost) before
    /// the progress acknowledgements of the servers since, which bound nothing about its
    /// record; its record is no older than `first_sent`, so the original contract covers it.
    pub(crate) fn window_for_move(&mut self, target: SocketAddr) {
        if matches!(self.phase, Phase::Write(_)) && self.tried.contains(&target) {
            self.window_start = self.first_sent;
        }
    }

    /// Forgets per-server progress before the request moves to another server.
    pub(crate) fn reset_for_new_server(&mut self, target: SocketAddr) {
        if !self.tried.contains(&self.target) {
            self.tried.push(self.target);
        }
        self.target = target;
        // The first transmission to the new server is its first attempt.
        self.attempts_on_server = 1;
        self.attempts_total += 1;
        self.token_retry_used = false;
        self.last_status = None;
        self.busy = None;
        self.refused = false;
        self.progress = false;
        match &mut self.phase {
            Phase::Single => {}
            Phase::Write(window) => window.restart(),
            Phase::Read(read) => read.reset(),
        }
    }
}
