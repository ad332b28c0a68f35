//! Turning a request's current exchange into queued messages and arming its timer.

use super::inflight::{InFlight, Phase};
use super::ClientCore;
use crate::assembly::{fragments_covering, Assembly, RANGE_FRAGMENTS_MAX};
use crate::encode::message;
use crate::outbox::Outbox;
use crate::request::RequestId;
use crate::routing::Router;
use crate::write_window::WriteWindow;
use proto::{flags, fragment_span, HeaderFields};
use std::time::Instant;

/// Hole runs one pull re-asks for, besides the next new range.
const PULL_RUNS_MAX: usize = 8;

impl ClientCore {
    /// Starts a new exchange of `id` (first send, next window, new server): its messages go
    /// out, its timer starts from the current timeout of the server and the request's class,
    /// and a reply to it may be an RTT sample.
    pub(super) fn send_fresh(&mut self, now: Instant, id: RequestId) {
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.rto = self.router.rto(request.target, request.class);
        request.rtt_sample_open = request.exchange_samples();
        self.send(now, id, false);
    }

    /// Sends the exchange of `id` again with the same tracking id: the whole exchange, or with
    /// `probe` only what asks the server where it stands. No RTT sample comes of it (Karn).
    pub(super) fn send_again(&mut self, now: Instant, id: RequestId, probe: bool) {
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.rtt_sample_open = false;
        self.send(now, id, probe);
    }

    fn send(&mut self, now: Instant, id: RequestId, probe: bool) {
        if self.resend_window_closed(now, id) {
            return;
        }
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.sent_at = now;
        request.progress = false;
        let mut out =
            Sender { client_id: self.client_id, router: &self.router, outbox: &mut self.outbox };
        out.exchange(request, probe);
        let deadline = request.timer_at(now + request.rto);
        self.timers.set(id, request.deadline, deadline);
        request.deadline = Some(deadline);
    }

    /// Whether `id`'s resend window is over: `resend_window` since its first send or its last
    /// progress (`InFlight::note_progress` says why progress may restart it). If so nothing may
    /// be sent for it any more (the server may have forgotten its completion record): its
    /// timer is moved to `now`, and `handle_timeout` fails it.
    pub(super) fn resend_window_closed(&mut self, now: Instant, id: RequestId) -> bool {
        let request = self.requests.get_mut(&id).expect("request in flight");
        if !request.window_closed(now, self.config.resend_window) {
            return false;
        }
        self.timers.set(id, request.deadline, now);
        request.deadline = Some(now);
        true
    }
}

/// Encodes a request's messages into the outbox.
struct Sender<'a> {
    client_id: u64,
    router: &'a Router,
    outbox: &'a mut Outbox,
}

impl Sender<'_> {
    fn exchange(&mut self, request: &mut InFlight, probe: bool) {
        let mut phase = std::mem::replace(&mut request.phase, Phase::Single);
        match &mut phase {
            Phase::Write(window) if probe => {
                let last = window.probe();
                self.fragment(request, window, last, true);
            }
            Phase::Write(window) => {
                let range = window.window();
                for index in range.clone() {
                    self.fragment(request, window, index, index + 1 == range.end);
                }
            }
            Phase::Read(read) => match (&read.assembly, request.request.byte_range()) {
                (Some(assembly), _) => {
                    read.range_end = self.pull(request, assembly, read.range_end)
                }
                (None, Some((offset, len))) => {
                    // A byte range: ask only for the fragments covering it, from the start.
                    let (first, end) = fragments_covering(offset, len);
                    let count = (end - first).min(RANGE_FRAGMENTS_MAX);
                    self.range(request, first, count, 0);
                    read.range_end = first + count;
                }
                (None, None) => self.whole(request),
            },
            Phase::Single => self.whole(request),
        }
        request.phase = phase;
    }

    fn header(&self, request: &InFlight, flags: u16) -> HeaderFields {
        let mut header = HeaderFields {
            opcode: request.request.opcode() as u8,
            flags: flags | request.request.base_flags(),
            client_id: self.client_id,
            tracking_id: request.tracking_id,
            map_epoch: self.router.epoch(),
            partition: request.partition,
            version: request.request.header_version(),
            token: self.router.token(request.target),
            ..HeaderFields::default()
        };
        // (The TTL takes the `partition` field, which servers ignore on keyed requests.)
        header.set_ttl_secs(request.request.ttl_secs());
        header
    }

    /// The request as one unfragmented message.
    fn whole(&mut self, request: &InFlight) {
        let value = request.request.wire_value();
        let header = HeaderFields { total_len: value.len() as u32, ..self.header(request, 0) };
        let bytes = message(&header, request.request.key(), &value);
        self.outbox.push(request.target, bytes);
    }

    fn fragment(&mut self, request: &InFlight, window: &WriteWindow, index: u32, ack: bool) {
        let value = request.request.value();
        let total_len = value.len() as u32;
        let flags = flags::FRAGMENT | if ack { flags::ACK_REQUEST } else { 0 };
        let header = HeaderFields {
            frag_index: index,
            frag_count: window.frag_count(),
            total_len,
            ..self.header(request, flags)
        };
        let span = fragment_span(total_len, index);
        let bytes = message(&header, request.request.key(), &value[span]);
        self.outbox.push(request.target, bytes);
    }

    /// RANGE requests for the holes below `range_end` and for the next fragments after it;
    /// returns the new `range_end`.
    fn pull(&mut self, request: &InFlight, assembly: &Assembly, range_end: u32) -> u32 {
        let mut runs = assembly.missing_runs(range_end, PULL_RUNS_MAX);
        let next_end = range_end.saturating_add(RANGE_FRAGMENTS_MAX).min(assembly.end());
        if range_end < next_end {
            runs.push((range_end, next_end - range_end));
        }
        for (first, count) in runs {
            self.range(request, first, count, assembly.version());
        }
        next_end.max(range_end)
    }

    /// One RANGE request: fragments `first .. first + count` of the value at `version`.
    fn range(&mut self, request: &InFlight, first: u32, count: u32, version: u64) {
        let header = HeaderFields {
            frag_index: first,
            frag_count: count,
            version,
            ..self.header(request, flags::RANGE)
        };
        self.outbox.push(request.target, message(&header, request.request.key(), &[]));
    }
}
