//! Replies: matching them to requests and acting on their status.

use super::inflight::Phase;
use super::timeout::BUSY_FOR_MAX;
use super::ClientCore;
use crate::assembly::{fragments_covering, Assembly, Inserted, RANGE_FRAGMENTS_MAX};
use crate::error::Error;
use crate::request::{Reply, RequestId};
use proto::{decode_addr, flags, HeaderFields, Message, Messages, Opcode, PartitionMap, Status};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl ClientCore {
    /// Takes a datagram from `from`: each reply message in it advances its request. Messages
    /// that are not replies to a request in flight are counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_received += 1;
        for message in Messages::new(datagram) {
            match message {
                Ok(message) => self.handle_message(now, from, &message),
                Err(_) => self.stats.replies_ignored += 1,
            }
        }
        self.settle_vouches(now);
    }

    fn handle_message(&mut self, now: Instant, from: SocketAddr, message: &Message<'_>) {
        let header = &message.header;
        let Some(id) = self.match_reply(header) else {
            self.stats.replies_ignored += 1;
            return;
        };
        self.learn_from(now, id, from, header);
        match message.status() {
            Status::RetryWithToken => self.on_retry_with_token(now, id),
            Status::WrongOwner => self.on_wrong_owner(now, id, from, message.value),
            Status::Busy => self.on_busy(now, id),
            Status::Unavailable => self.fail_over(now, id, Some(Status::Unavailable)),
            Status::VersionMismatch if self.is_pulling(id) => self.restart_read(now, id),
            _ if header.has(flags::PARTIAL) => self.on_partial(now, id, header.frag_index),
            Status::Ok if header.has(flags::FRAGMENT) => self.on_fragment(now, id, message),
            status => self.on_final(now, id, status, message),
        }
    }

    /// The request a reply answers: ours, in flight, same opcode.
    fn match_reply(&self, header: &HeaderFields) -> Option<RequestId> {
        if !header.has(flags::REPLY) || header.client_id != self.client_id {
            return None;
        }
        let id = *self.by_tracking.get(&header.tracking_id)?;
        let request = &self.requests[&id];
        (request.request.opcode() as u8 == header.opcode).then_some(id)
    }

    /// What any reply teaches: the sender's token, a newer map epoch, a round-trip sample.
    fn learn_from(&mut self, now: Instant, id: RequestId, from: SocketAddr, header: &HeaderFields) {
        let request = self.requests.get_mut(&id).expect("matched request");
        self.router.note_answer(request.target);
        self.router.remember_token(from, header.token);
        if from != request.target {
            // A server may answer from another address than the one we use for it.
            self.router.remember_token(request.target, header.token);
        }
        if request.rtt_sample_open {
            request.rtt_sample_open = false;
            let rtt = now.saturating_duration_since(request.sent_at);
            self.router.on_rtt_sample(now, request.target, request.class, rtt);
        }
        // A MAP reply brings the map itself: no need to ask for it again.
        let is_map = request.request.opcode() == Opcode::Map;
        if header.map_epoch > self.router.epoch() && !is_map {
            self.refresh_map(now, from);
        }
    }

    fn on_final(&mut self, now: Instant, id: RequestId, status: Status, message: &Message<'_>) {
        let opcode = self.requests[&id].request.opcode();
        if !is_answer(opcode, status) {
            return self.finish(id, Err(Error::Status(status)));
        }
        // A CAS of an absent key whose expected version was not 0 is a mismatch with version
        // 0, however the server words it: callers see one outcome for it.
        let (status, version) = match (opcode, status) {
            (Opcode::Cas, Status::NotFound) => (Status::VersionMismatch, 0),
            _ => (status, message.header.version),
        };
        let reply = Reply {
            status,
            value: message.value.to_vec(),
            version,
            reference: message.header.has(flags::REF_ONLY),
            current_value: message.header.has(flags::RETURN_VALUE),
            server: self.requests[&id].target,
        };
        self.complete(now, id, reply);
    }

    /// Finishes `id` with an answer; a partition map is adopted on the way, a ranged chunk
    /// read keeps only its bytes.
    fn complete(&mut self, now: Instant, id: RequestId, mut reply: Reply) {
        let request = &self.requests[&id].request;
        let opcode = request.opcode();
        if let (Some((offset, len)), Status::Ok) = (request.byte_range(), reply.status) {
            let start = (offset as usize).min(reply.value.len());
            let end = (offset as usize).saturating_add(len as usize).min(reply.value.len());
            reply.value.truncate(end);
            reply.value.drain(..start);
        }
        if opcode == Opcode::Map && reply.status == Status::Ok {
            let from = reply.server;
            if let Err(error) = self.adopt_map(now, &reply.value, from) {
                return self.finish(id, Err(error));
            }
        }
        self.finish(id, Ok(reply));
    }

    fn adopt_map(&mut self, now: Instant, encoded: &[u8], from: SocketAddr) -> Result<(), Error> {
        let map = PartitionMap::decode(encoded).map_err(|_| Error::BadReply("partition map"))?;
        match self.router.install_map(map, from) {
            Ok(true) => self.reroute_waiting(now),
            Ok(false) => {}
            Err(f) => {
                self.stats.foreign_servers += 1;
                let (server, cluster, expected) = (f.server, f.cluster, f.expected);
                return Err(Error::ForeignCluster { server, cluster, expected });
            }
        }
        Ok(())
    }

    fn on_retry_with_token(&mut self, now: Instant, id: RequestId) {
        let budget = self.config.attempts_per_server;
        let request = self.requests.get_mut(&id).expect("matched request");
        if request.token_retry_used {
            // Only the first challenge is free: a server that keeps asking spends the budget.
            if request.attempts_on_server >= budget {
                return self.fail_over(now, id, None);
            }
            request.attempts_on_server += 1;
            request.attempts_total += 1;
        }
        request.token_retry_used = true;
        self.stats.token_retries += 1;
        self.send_again(now, id, false);
    }

    fn on_wrong_owner(&mut self, now: Instant, id: RequestId, from: SocketAddr, hint: &[u8]) {
        self.refresh_map(now, from);
        let request = self.requests.get_mut(&id).expect("matched request");
        if request.request.server().is_some() || request.redirects >= self.config.redirects_max {
            return self.finish(id, Err(Error::Status(Status::WrongOwner)));
        }
        request.redirects += 1;
        self.stats.redirects += 1;
        match decode_addr(hint) {
            Ok((owner, _)) if owner != request.target => self.move_to(now, id, owner),
            // No usable hint: wait for the refreshed map (or the timer) and route again.
            _ => request.reroute = true,
        }
    }

    /// BUSY: the server is there and answered, so this is no lost datagram to back the timer
    /// off for: ask again after a short pause that doubles with each BUSY on this server (1 ms,
    /// 2 ms, … at most 32 ms), for up to `BUSY_FOR_MAX`. A server is BUSY while it waits to
    /// serve a partition it was just given (a new primary's promotion wait), while a backup it
    /// waits for is being failed over, or while it is cut off from its backups: from the
    /// second BUSY on, the client also asks the other nodes for the map every `MAP_WATCH`
    /// (`watch_map`), and goes to the new owner as soon as a map names one. A server BUSY for
    /// longer is left for the next configured one; BUSY is the error if none is left.
    fn on_busy(&mut self, now: Instant, id: RequestId) {
        let request = self.requests.get_mut(&id).expect("matched request");
        request.last_status = Some(Status::Busy);
        let (since, times) = request.busy.get_or_insert((now, 0));
        if now.saturating_duration_since(*since) >= BUSY_FOR_MAX {
            return self.fail_over(now, id, Some(Status::Busy));
        }
        *times += 1;
        let shift = (*times).clamp(1, 6) - 1;
        let watch = *times >= 2 && request.request.server().is_none();
        request.attempts_total += 1;
        let pause = Duration::from_millis(1 << shift);
        if watch {
            self.map_watch_at.get_or_insert(now + super::timeout::MAP_WATCH);
        }
        let request = self.requests.get_mut(&id).expect("matched request");
        request.progress = true; // (its expiry resends without counting a lost attempt)
        let at = request.timer_at(now + pause);
        self.timers.set(id, request.deadline, at);
        request.deadline = Some(at);
    }

    fn on_partial(&mut self, now: Instant, id: RequestId, first_missing: u32) {
        let request = self.requests.get_mut(&id).expect("matched request");
        let Phase::Write(window) = &mut request.phase else {
            self.stats.replies_ignored += 1;
            return;
        };
        match window.on_partial(first_missing) {
            Some(advanced) => {
                if advanced {
                    // Sent before the write completed: it may restart the resend window.
                    request.note_progress(now);
                }
                self.send_fresh(now, id);
            }
            None => self.stats.replies_ignored += 1,
        }
    }

    fn on_fragment(&mut self, now: Instant, id: RequestId, message: &Message<'_>) {
        let header = &message.header;
        let request = self.requests.get_mut(&id).expect("matched request");
        let byte_range = request.request.byte_range();
        let target = request.target;
        let Phase::Read(read) = &mut request.phase else {
            self.stats.replies_ignored += 1;
            return;
        };
        let assembly = match &mut read.assembly {
            Some(assembly) => assembly,
            None => {
                let Some(mut assembly) = Assembly::new(header.total_len, header.version) else {
                    return self.finish(id, Err(Error::BadReply("reply value over 16 MiB")));
                };
                match byte_range {
                    Some((offset, len)) => {
                        // Only the fragments covering the range; the first pull asked for them.
                        let (first, end) = fragments_covering(offset, len);
                        assembly.restrict(first, end);
                        read.range_end = read.range_end.min(assembly.end());
                    }
                    // The server volunteers the first fragments of the value.
                    None => read.range_end = RANGE_FRAGMENTS_MAX.min(assembly.frag_count()),
                }
                read.assembly.insert(assembly)
            }
        };
        read.reference = header.has(flags::REF_ONLY);
        if assembly.version() != header.version || assembly.total_len() != header.total_len {
            return self.restart_read(now, id);
        }
        if assembly.insert(header.frag_index, message.value) != Inserted::New {
            self.stats.replies_ignored += 1;
            return;
        }
        // `note_progress`, field by field: `read` borrows the phase. A read has no completion
        // record, so a new fragment may restart its window like a write's acknowledgement.
        request.progress = true;
        request.attempts_on_server = 1;
        request.window_start = now;
        if assembly.is_complete() {
            let version = assembly.version();
            let value = read.assembly.take().expect("complete assembly").into_value();
            let reply = Reply {
                status: Status::Ok,
                value,
                version,
                reference: read.reference,
                current_value: false,
                server: target,
            };
            return self.complete(now, id, reply);
        }
        // The last fragment asked for arrived, or everything asked for did: ask for more.
        if header.frag_index + 1 >= read.range_end || assembly.first_missing() >= read.range_end {
            self.send_fresh(now, id);
        }
    }

    fn is_pulling(&self, id: RequestId) -> bool {
        matches!(&self.requests[&id].phase, Phase::Read(read) if read.assembly.is_some())
    }

    /// The value changed under a fragmented read: read it again under a new tracking id.
    fn restart_read(&mut self, now: Instant, id: RequestId) {
        let request = self.requests.get_mut(&id).expect("matched request");
        request.restarts += 1;
        self.stats.read_restarts += 1;
        if request.restarts > self.config.read_restarts_max {
            let restarts = self.config.read_restarts_max;
            return self.finish(id, Err(Error::ValueKeptChanging { restarts }));
        }
        request.phase = Phase::Read(Default::default());
        let old = request.tracking_id;
        self.by_tracking.remove(&old);
        let tracking_id = self.new_tracking_id(id);
        let request = self.requests.get_mut(&id).expect("request in flight");
        request.tracking_id = tracking_id;
        // A new tracking id: the server holds nothing under it yet, a new window starts.
        request.first_sent = now;
        request.window_start = now;
        self.send_fresh(now, id);
    }
}

/// Whether `status` answers an `opcode` request (rather than refusing it).
fn is_answer(opcode: Opcode, status: Status) -> bool {
    match status {
        Status::Ok => true,
        Status::NotFound => matches!(
            opcode,
            Opcode::Get | Opcode::Delete | Opcode::Cas | Opcode::Chunk | Opcode::Touch
        ),
        Status::VersionMismatch => opcode == Opcode::Cas,
        Status::BelowFloor => opcode == Opcode::Incr,
        _ => false,
    }
}
