//! One core's door: its TCP listener and connections (mio, edge-triggered), its UDP port
//! (`recvmmsg`/`sendmmsg` bursts), its rings to the other cores, and the replies waiting for
//! other cores or for the group commit. Driven by the core's loop once per iteration
//! (`step` before the core's end of batch, `settle` after it); it never blocks.

use crate::config::DoorConfig;
use crate::counters::{Counters, DoorStats};
use crate::execute::{execute, Job, Op, OwnedJob};
use crate::frame;
use crate::lanes::{Envelope, Lanes, ReplyTo, SinkRef};
use crate::parse::{parse, Command, ParseError, Parsed};
use crate::sink::{Sink, SinkKind};
use control::{Core, ItemSlot, KeyOwner, NodeStats};
use dataplane::{Buffer, PacketBuf, Port, UdpPort, BATCH};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const UDP: Token = Token(2);
const FIRST_SINK: usize = 3;

/// Readiness events taken per iteration.
const EVENTS_MAX: usize = 256;
/// Bytes read from one connection per iteration (then it waits for the next turn).
const READ_BYTES_PER_STEP_MAX: usize = 256 * 1024;
/// Bytes asked of one `read`.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A connection whose unsent replies pass this is not read until they drain.
const OUT_BYTES_MAX: usize = 4 << 20;
/// Reply bytes a connection may hold before a get stops adding values to it: the keys of one
/// get are served at once, so without this 1,024 keys of 16 MiB would be held at once.
/// (Values handed to other cores are counted when they come back.)
const GET_REPLY_BYTES_MAX: usize = 64 << 20;
/// Envelopes taken from the rings per iteration.
const ENVELOPES_PER_STEP_MAX: usize = 4 * BATCH * 8;
/// UDP bursts received per iteration.
const UDP_BURSTS_PER_STEP_MAX: usize = 8;
/// Connections accepted per iteration.
const ACCEPTS_PER_STEP_MAX: usize = 64;

/// The version line (the numeric part first: tools parse it).
const VERSION: &[u8] = b"VERSION 1.6.0-cradle-0.1.0\r\n";

/// A write whose reply waits for the group commit of its endpoint.
#[derive(Debug)]
struct Held {
    slot: ItemSlot,
    reply_to: ReplyTo,
    bytes: Vec<u8>,
}

/// One core's door.
#[derive(Debug)]
pub struct Door {
    core: u32,
    config: DoorConfig,
    stats: Arc<DoorStats>,
    node_stats: Arc<NodeStats>,
    counters: Counters,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    udp: UdpPort,
    udp_rx: Vec<PacketBuf>,
    udp_tx: Vec<PacketBuf>,
    /// More datagrams may be queued (edge-triggered: read until a short burst).
    udp_ready: bool,
    sinks: Vec<Sink>,
    free_sinks: Vec<u32>,
    lanes: Lanes,
    held: Vec<Held>,
    scratch: Vec<u8>,
    /// Connections to read again next iteration (a read budget ran out, or they drained).
    again: Vec<u32>,
    /// This iteration's readable connections and readiness events (kept for their memory).
    readable: Vec<u32>,
    event_list: Vec<(Token, bool, bool)>,
    /// Work is left for the next iteration: the loop must not block.
    busy: Arc<AtomicBool>,
    /// The last iteration did something (the loop spins a while before it blocks).
    active: Arc<AtomicBool>,
    waker: Arc<Waker>,
    udp_trusted_cache: Option<(SocketAddr, bool)>,
}

/// Binds one core's TCP listener and UDP socket on `addr` with `SO_REUSEPORT`, so every core
/// of the node listens on the same port and the kernel spreads connections and UDP flows.
pub fn bind(addr: SocketAddr) -> io::Result<(std::net::TcpListener, std::net::UdpSocket)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(addr);
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    tcp.set_reuse_address(true)?;
    tcp.set_reuse_port(true)?;
    tcp.bind(&addr.into())?;
    tcp.listen(1024)?;
    let port = tcp.local_addr()?.as_socket().map_or(addr.port(), |a| a.port());
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    udp.set_reuse_port(true)?;
    udp.bind(&SocketAddr::new(addr.ip(), port).into())?;
    Ok((tcp.into(), udp.into()))
}

impl Door {
    /// A door over sockets from `bind`; its rings come later (`connect_lanes`).
    pub fn new(
        core: u32,
        config: DoorConfig,
        sockets: (std::net::TcpListener, std::net::UdpSocket),
        stats: Arc<DoorStats>,
        node_stats: Arc<NodeStats>,
    ) -> io::Result<Door> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (tcp, udp) = sockets;
        tcp.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(tcp);
        let udp = UdpPort::from_socket(udp, dataplane::UdpConfig::default())?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&udp);
        poll.registry().register(&mut mio::unix::SourceFd(&fd), UDP, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Door {
            core,
            config,
            stats,
            node_stats,
            counters: Counters::default(),
            poll,
            events: Events::with_capacity(EVENTS_MAX),
            listener,
            udp,
            udp_rx: Vec::with_capacity(BATCH),
            udp_tx: Vec::with_capacity(BATCH),
            udp_ready: true,
            sinks: Vec::new(),
            free_sinks: Vec::new(),
            lanes: Lanes::single(),
            held: Vec::new(),
            scratch: Vec::new(),
            again: Vec::new(),
            readable: Vec::new(),
            event_list: Vec::with_capacity(EVENTS_MAX),
            busy: Arc::new(AtomicBool::new(false)),
            active: Arc::new(AtomicBool::new(false)),
            waker,
            udp_trusted_cache: None,
        })
    }

    /// What wakes this door's loop when another core hands it work.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Gives the door its rings (from `lanes::connect`).
    pub fn connect_lanes(&mut self, lanes: Lanes) {
        self.lanes = lanes;
    }

    /// The descriptor that is readable when the door has events (for the loop's wait).
    pub fn wait_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.poll)
    }

    /// Set while work is left for the next iteration (the loop must not block).
    pub fn busy_flag(&self) -> Arc<AtomicBool> {
        self.busy.clone()
    }

    /// Set when an iteration did something (read by the loop's idle policy).
    pub fn active_flag(&self) -> Arc<AtomicBool> {
        self.active.clone()
    }

    /// The TCP and UDP port.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// One iteration: hand-overs from other cores, new connections and input, datagrams.
    /// Call before the core's `end_batch`, so its group commit covers these writes.
    pub fn step(&mut self, now_ns: u64, core: &mut Core) {
        core.begin_items(now_ns);
        let mut more = self.take_envelopes(core);
        if let Err(e) = self.poll.poll(&mut self.events, Some(std::time::Duration::ZERO)) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("cradle: memcache door on core {}: poll failed: {e}", self.core);
            }
        }
        let mut readable = std::mem::take(&mut self.readable);
        readable.append(&mut self.again);
        let mut accept = false;
        let mut events = std::mem::take(&mut self.event_list);
        events.extend(self.events.iter().map(|e| (e.token(), e.is_readable(), e.is_writable())));
        for e in self.events.iter().filter(|e| e.is_read_closed() || e.is_error()) {
            // Its FIN (or error) is known: read it to the end, not just to a short read.
            if let Some(sink) =
                e.token().0.checked_sub(FIRST_SINK).and_then(|i| self.sinks.get_mut(i))
            {
                sink.hangup = true;
            }
            events.push((e.token(), true, false));
        }
        more |= events.len() == EVENTS_MAX;
        let bytes_before = self.counters.bytes_read + self.counters.handed_back;
        if !events.is_empty() {
            self.active.store(true, Ordering::Relaxed);
        }
        for &(token, read, write) in &events {
            match token {
                LISTENER => accept = true,
                WAKER => more = true,
                UDP => self.udp_ready = true,
                Token(t) => {
                    let index = (t - FIRST_SINK) as u32;
                    if write {
                        self.flush_tcp(index);
                    }
                    if read && !readable.contains(&index) {
                        readable.push(index);
                    }
                }
            }
        }
        events.clear();
        self.event_list = events;
        if accept {
            more |= self.accept();
        }
        for &index in &readable {
            self.read_tcp(core, index);
        }
        readable.clear();
        self.readable = readable;
        more |= self.receive_udp(core);
        more |= !self.again.is_empty();
        if self.counters.bytes_read + self.counters.handed_back != bytes_before {
            self.active.store(true, Ordering::Relaxed);
        }
        self.finish(more);
    }

    /// After the core's group commit: answers the writes it made durable, sends what is due.
    pub fn settle(&mut self, core: &mut Core) {
        let mut i = 0;
        while i < self.held.len() {
            match core.item_settled(self.held[i].slot) {
                None => i += 1,
                Some(outcome) => {
                    let held = self.held.swap_remove(i);
                    let bytes = match outcome {
                        Ok(()) => held.bytes,
                        Err(error) => crate::execute::store_error(error).to_vec(),
                    };
                    self.deliver(held.reply_to, bytes);
                }
            }
        }
        let more = self.busy.load(Ordering::Relaxed);
        self.finish(more);
    }

    /// Sends what is due, publishes the counters, says whether work is left.
    fn finish(&mut self, more: bool) {
        let more = more | self.lanes.retry();
        self.lanes.wake();
        self.flush_udp();
        for index in 0..self.sinks.len() as u32 {
            let sink = &self.sinks[index as usize];
            if sink.has_output() || (sink.quitting && matches!(sink.kind, SinkKind::Tcp(_))) {
                self.flush_tcp(index);
            }
        }
        self.busy.store(more || !self.held.is_empty(), Ordering::Relaxed);
        self.stats.publish(self.core, &self.counters);
    }

    fn take_envelopes(&mut self, core: &mut Core) -> bool {
        for _ in 0..ENVELOPES_PER_STEP_MAX {
            let Some(envelope) = self.lanes.receive() else { return false };
            self.active.store(true, Ordering::Relaxed);
            match envelope {
                Envelope::Job { reply_to, job } => self.run_handed(core, reply_to, job),
                Envelope::Done { sink, seq, bytes } => {
                    self.counters.handed_back += 1;
                    self.fill(sink, seq, bytes);
                }
            }
        }
        true
    }

    /// A job another core handed over: run it here and send the reply back (after the
    /// group commit for a write).
    fn run_handed(&mut self, core: &mut Core, reply_to: ReplyTo, job: OwnedJob) {
        let mut out = Vec::new();
        let job = job.as_job();
        if job.op == Op::Clear {
            clear_here(core, &mut out);
            return self.deliver(reply_to, out);
        }
        match core.owner_of(job.key) {
            KeyOwner::Here(slot) => {
                if let Some(slot) = execute(core, slot, &job, &mut self.counters, &mut out) {
                    self.counters.held_for_commit += 1;
                    self.held.push(Held { slot, reply_to, bytes: out });
                    return;
                }
            }
            // The map moved the key while the job travelled.
            _ => out.extend_from_slice(b"SERVER_ERROR the key moved; try again\r\n"),
        }
        self.deliver(reply_to, out);
    }

    fn deliver(&mut self, reply_to: ReplyTo, bytes: Vec<u8>) {
        if reply_to.core == self.core {
            self.fill(reply_to.sink, reply_to.seq, bytes);
        } else {
            self.lanes.send_done(reply_to.core, reply_to.sink, reply_to.seq, bytes);
        }
    }

    /// A waiting part of a sink is ready; a UDP reply that is now whole goes out.
    fn fill(&mut self, sink: SinkRef, seq: u64, bytes: Vec<u8>) {
        let Some(s) = self.sinks.get_mut(sink.index as usize) else { return };
        if s.generation != sink.generation {
            return; // the connection closed meanwhile
        }
        s.fill(seq, bytes);
        if matches!(s.kind, SinkKind::Udp { .. }) && s.is_whole() {
            self.send_udp_reply(sink.index);
        }
    }

    fn allocate_sink(&mut self, kind: SinkKind) -> SinkRef {
        let index = match self.free_sinks.pop() {
            Some(i) => i,
            None => {
                self.sinks.push(Sink::default());
                (self.sinks.len() - 1) as u32
            }
        };
        let sink = &mut self.sinks[index as usize];
        sink.open(kind);
        SinkRef { index, generation: sink.generation }
    }

    fn free_sink(&mut self, index: u32) {
        let sink = &mut self.sinks[index as usize];
        if let SinkKind::Tcp(stream) = &mut sink.kind {
            let _ = self.poll.registry().deregister(stream);
            self.counters.curr_connections -= 1;
        }
        sink.close();
        self.free_sinks.push(index);
    }

    /// Accepts waiting connections; true if more may be waiting.
    fn accept(&mut self) -> bool {
        for _ in 0..ACCEPTS_PER_STEP_MAX {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNABORTED, EMFILE and the like: this one is lost, the listener lives.
                Err(_) => continue,
            };
            if self.counters.curr_connections as usize >= self.config.connections_max {
                self.counters.rejected_connections += 1;
                let _ = stream.write_all(b"SERVER_ERROR too many open connections\r\n");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let sink = self.allocate_sink(SinkKind::Closed);
            let token = Token(FIRST_SINK + sink.index as usize);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self.poll.registry().register(&mut stream, token, interest).is_err() {
                self.free_sink(sink.index);
                continue;
            }
            self.sinks[sink.index as usize].kind = SinkKind::Tcp(stream);
            self.counters.curr_connections += 1;
            self.counters.total_connections += 1;
            // Data may have arrived before the registration: read once.
            self.again.push(sink.index);
        }
        true
    }

    /// Reads what a connection sent (up to a budget) and serves the whole commands in it.
    fn read_tcp(&mut self, core: &mut Core, index: u32) {
        let mut input = std::mem::take(&mut self.sinks[index as usize].input);
        let mut read = 0;
        // The peer closed its side (it may still read the replies), or the connection failed.
        let (mut ended, mut closed) = (false, false);
        loop {
            let sink = &mut self.sinks[index as usize];
            if sink.pending_out() > OUT_BYTES_MAX || sink.quitting {
                sink.blocked = true;
                break;
            }
            let hangup = sink.hangup;
            let SinkKind::Tcp(stream) = &mut sink.kind else { return };
            if read >= READ_BYTES_PER_STEP_MAX {
                self.again.push(index);
                break;
            }
            let at = input.len();
            input.resize(at + READ_CHUNK_BYTES, 0);
            match stream.read(&mut input[at..]) {
                Ok(0) => {
                    input.truncate(at);
                    ended = true;
                    break;
                }
                Ok(n) => {
                    input.truncate(at + n);
                    read += n;
                    self.counters.bytes_read += n as u64;
                    if n < READ_CHUNK_BYTES && !hangup {
                        // Drained for now; anything arriving after the readiness event was
                        // taken is a new edge, so the read that would say EAGAIN is saved.
                        // (A FIN that came before it is `hangup`: read on to the end.)
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    input.truncate(at);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => input.truncate(at),
                Err(_) => {
                    input.truncate(at);
                    closed = true;
                    break;
                }
            }
        }
        let sink = SinkRef { index, generation: self.sinks[index as usize].generation };
        let used = self.serve(core, sink, &input, false);
        input.drain(..used);
        let s = &mut self.sinks[index as usize];
        // Input left because the replies are backed up: served again once they drain.
        s.blocked |= !input.is_empty() && s.pending_out() > OUT_BYTES_MAX;
        s.input = input;
        s.quitting |= ended; // `printf 'stats\r\n' | nc` still gets its answer
        if closed {
            self.free_sink(index);
        } else if s.quitting {
            self.flush_tcp(index); // closes it once its replies are out
        }
    }

    /// Serves the whole commands at the start of `input`; returns the bytes used. With
    /// `datagram`, the input ends where the datagram does (an open command is an error).
    fn serve(&mut self, core: &mut Core, sink: SinkRef, input: &[u8], datagram: bool) -> usize {
        let mut at = 0;
        while at < input.len() {
            let s = &mut self.sinks[sink.index as usize];
            if s.quitting || (!datagram && s.pending_out() > OUT_BYTES_MAX) {
                break;
            }
            if s.swallow > 0 {
                at += s.swallow_from(&input[at..]);
                continue;
            }
            if std::mem::take(&mut s.fresh) && !datagram && crate::parse::is_binary(input) {
                // A binary client's bytes are not text at all: tell it, and end the connection.
                s.push_ready(ParseError::BinaryProtocol.reply());
                s.quitting = true;
                return input.len();
            }
            match parse(&input[at..], self.config.item_bytes_max) {
                Parsed::Incomplete if datagram => {
                    let open = &input[at..];
                    let storage =
                        [&b"set "[..], b"add ", b"replace ", b"append ", b"prepend ", b"cas "];
                    let error =
                        if open.contains(&b'\n') && storage.iter().any(|s| open.starts_with(s)) {
                            ParseError::BadDataChunk
                        } else {
                            ParseError::UnknownCommand
                        };
                    self.sinks[sink.index as usize].push_ready(error.reply());
                    return input.len();
                }
                Parsed::Incomplete => break,
                Parsed::Error { error, used, swallow } => {
                    let s = &mut self.sinks[sink.index as usize];
                    s.push_ready(error.reply());
                    s.swallow = if datagram { 0 } else { swallow };
                    at += used;
                }
                Parsed::Command(command, used) => {
                    self.dispatch(core, sink, command, datagram);
                    at += used;
                }
            }
        }
        at
    }

    fn dispatch(&mut self, core: &mut Core, sink: SinkRef, command: Command<'_>, datagram: bool) {
        match command {
            Command::Get { keys, cas, touch } => {
                for key in keys.iter() {
                    if self.sinks[sink.index as usize].held_bytes() > GET_REPLY_BYTES_MAX {
                        // memcached's words when a get's reply outgrows its memory.
                        let full = b"SERVER_ERROR out of memory writing get response\r\n";
                        return self.sinks[sink.index as usize].push_ready(full);
                    }
                    let job = Job { key, value: &[], op: Op::Get { cas, touch }, noreply: false };
                    self.run_job(core, sink, &job);
                }
                self.sinks[sink.index as usize].push_ready(b"END\r\n");
            }
            Command::Store { mode, key, flags, exptime, value, cas, noreply } => {
                let op = Op::Store { mode, flags, exptime, cas };
                self.run_job(core, sink, &Job { key, value, op, noreply });
            }
            Command::Delete { key, noreply } => {
                self.run_job(core, sink, &Job { key, value: &[], op: Op::Delete, noreply })
            }
            Command::Arith { key, delta, decr, noreply } => {
                let op = Op::Arith { delta, decr };
                self.run_job(core, sink, &Job { key, value: &[], op, noreply });
            }
            Command::Touch { key, exptime, noreply } => {
                let op = Op::Touch { exptime };
                self.run_job(core, sink, &Job { key, value: &[], op, noreply });
            }
            Command::FlushAll { noreply } => self.flush_all(core, sink, noreply),
            Command::Version => self.sinks[sink.index as usize].push_ready(VERSION),
            Command::Verbosity { noreply } => {
                if !noreply {
                    self.sinks[sink.index as usize].push_ready(b"OK\r\n");
                }
            }
            Command::Stats { arg } => {
                let text = crate::stats::render(arg, &self.stats, &self.node_stats, &self.config);
                self.sinks[sink.index as usize].push_ready(&text);
            }
            Command::Quit if !datagram => self.sinks[sink.index as usize].quitting = true,
            Command::Quit => {}
        }
    }

    /// Runs one key's job here, or hands it to the core that owns the key.
    fn run_job(&mut self, core: &mut Core, sink: SinkRef, job: &Job<'_>) {
        let s = &mut self.sinks[sink.index as usize];
        if s.refused {
            return; // the datagram's reply is refused already: read nothing more for it
        }
        match core.owner_of(job.key) {
            KeyOwner::Here(slot) if over_budget(core, slot, s, job) => {
                // A value the sender may not be sent is not read (nor a blob assembled): a
                // forged small request costs the core no more than its own size.
                s.refused = true;
            }
            KeyOwner::Here(slot) => {
                let direct = s.parts_waiting() == 0;
                let out = if direct { &mut s.out } else { &mut self.scratch };
                let start = out.len();
                let held = execute(core, slot, job, &mut self.counters, out);
                match held {
                    Some(slot) => {
                        let bytes = out.split_off(start);
                        self.counters.held_for_commit += 1;
                        let seq = self.sinks[sink.index as usize].push_waiting();
                        let reply_to = ReplyTo { core: self.core, sink, seq };
                        self.held.push(Held { slot, reply_to, bytes });
                    }
                    None if !direct => {
                        let bytes = std::mem::take(&mut self.scratch);
                        self.sinks[sink.index as usize].push_ready(&bytes);
                        self.scratch = bytes;
                        self.scratch.clear();
                    }
                    None => {}
                }
            }
            KeyOwner::Core(owner) => {
                let seq = s.push_waiting();
                let reply_to = ReplyTo { core: self.core, sink, seq };
                self.counters.handed_over += 1;
                if !self.lanes.send_job(owner, reply_to, OwnedJob::of(job)) {
                    self.counters.ring_full += 1;
                    self.fill(sink, seq, b"SERVER_ERROR busy\r\n".to_vec());
                }
            }
            KeyOwner::Elsewhere => {
                s.push_ready(b"SERVER_ERROR the key is served by another node\r\n");
            }
        }
    }

    /// flush_all: every core deletes its keys; one OK once all have.
    fn flush_all(&mut self, core: &mut Core, sink: SinkRef, noreply: bool) {
        if !self.config.flush_all {
            self.sinks[sink.index as usize].push_ready(b"CLIENT_ERROR flush_all not allowed\r\n");
            return;
        }
        self.counters.cmd_flush += 1;
        let job = Job { key: &[], value: &[], op: Op::Clear, noreply: true };
        let mut out = Vec::new();
        clear_here(core, &mut out);
        self.sinks[sink.index as usize].push_ready(&out);
        let me = self.core;
        for other in (0..self.stats.cores()).filter(|&c| c != me) {
            let seq = self.sinks[sink.index as usize].push_waiting();
            let reply_to = ReplyTo { core: self.core, sink, seq };
            if !self.lanes.send_job(other, reply_to, OwnedJob::of(&job)) {
                self.fill(sink, seq, b"SERVER_ERROR busy\r\n".to_vec());
            }
        }
        if !noreply {
            self.sinks[sink.index as usize].push_ready(b"OK\r\n");
        }
    }

    /// Writes a connection's ready replies; closes it after `quit` once they are out.
    fn flush_tcp(&mut self, index: u32) {
        let Some(sink) = self.sinks.get_mut(index as usize) else { return };
        if !matches!(sink.kind, SinkKind::Tcp(_)) {
            return;
        }
        let written = sink.write_out();
        self.counters.bytes_written += *written.as_ref().unwrap_or(&0) as u64;
        let failed = written.is_err();
        if failed || (sink.quitting && !sink.has_output() && sink.parts_waiting() == 0) {
            self.free_sink(index);
            return;
        }
        if sink.blocked && sink.pending_out() <= OUT_BYTES_MAX / 2 {
            sink.blocked = false;
            self.again.push(index);
        }
    }

    /// Receives and serves datagrams; true if more may be queued.
    fn receive_udp(&mut self, core: &mut Core) -> bool {
        for _ in 0..UDP_BURSTS_PER_STEP_MAX {
            if !self.udp_ready {
                return false;
            }
            let mut rx = std::mem::take(&mut self.udp_rx);
            if self.udp.rx_burst(&mut rx).is_err() {
                self.udp_rx = rx;
                self.udp_ready = false;
                return false;
            }
            self.udp_ready = rx.len() == BATCH;
            for buf in &rx {
                for datagram in dataplane::datagrams(buf) {
                    self.serve_datagram(core, buf.peer(), datagram);
                }
            }
            for buf in rx.drain(..) {
                self.udp.release(buf);
            }
            self.udp_rx = rx;
        }
        self.udp_ready
    }

    fn serve_datagram(&mut self, core: &mut Core, peer: SocketAddr, datagram: &[u8]) {
        self.counters.bytes_read += datagram.len() as u64;
        let Some((request_id, payload)) = frame::request(datagram) else {
            self.counters.udp_malformed += 1;
            return;
        };
        let trusted = match self.udp_trusted_cache {
            Some((cached, trusted)) if cached == peer => trusted,
            _ => {
                let trusted = frame::trusted(&self.config.udp_allow, peer);
                self.udp_trusted_cache = Some((peer, trusted));
                trusted
            }
        };
        let kind = SinkKind::Udp { peer, request_id, request_bytes: datagram.len(), trusted };
        let sink = self.allocate_sink(kind);
        self.serve(core, sink, payload, true);
        if self.sinks[sink.index as usize].is_whole() {
            self.send_udp_reply(sink.index);
        }
    }

    /// Frames a whole UDP reply (or its refusal) into datagrams and frees its sink.
    fn send_udp_reply(&mut self, index: u32) {
        let sink = &mut self.sinks[index as usize];
        let SinkKind::Udp { peer, request_id, request_bytes, trusted } = sink.kind else { return };
        let refused = sink.refused;
        let mut out = std::mem::take(&mut sink.out);
        if !out.is_empty() || refused {
            let payload = if refused {
                frame::USE_TCP
            } else {
                frame::allowed_reply(&out, request_bytes, trusted)
            };
            if payload.len() != out.len() || payload.as_ptr() != out.as_ptr() {
                self.counters.udp_refused += 1;
            }
            let count = frame::datagrams_for(payload.len());
            for (sequence, chunk) in payload.chunks(frame::PAYLOAD_BYTES_MAX).enumerate() {
                let header = frame::header(request_id, sequence as u16, count as u16);
                if !self.queue_datagram(peer, &header, chunk) {
                    break; // out of buffers: the rest is lost, as UDP may lose it anyway
                }
            }
        }
        out.clear();
        self.sinks[index as usize].out = out;
        self.free_sink(index);
    }

    fn queue_datagram(&mut self, peer: SocketAddr, header: &[u8], chunk: &[u8]) -> bool {
        let buf = match self.udp.alloc_tx() {
            Some(buf) => buf,
            None => {
                self.flush_udp();
                match self.udp.alloc_tx() {
                    Some(buf) => buf,
                    None => return false,
                }
            }
        };
        let mut buf = buf;
        let len = header.len() + chunk.len();
        let room = buf.capacity_mut();
        if room.len() < len {
            self.udp.release(buf);
            return false;
        }
        room[..header.len()].copy_from_slice(header);
        room[header.len()..len].copy_from_slice(chunk);
        buf.set_len(len);
        buf.set_peer(peer);
        self.counters.bytes_written += len as u64;
        self.udp_tx.push(buf);
        if self.udp_tx.len() == BATCH {
            self.flush_udp();
        }
        true
    }

    fn flush_udp(&mut self) {
        for _ in 0..4 {
            if self.udp_tx.is_empty() {
                return;
            }
            if self.udp.tx_burst(&mut self.udp_tx).is_err() {
                break;
            }
        }
        // A socket that stays full drops the rest: a loop that cannot send must still serve.
        for buf in self.udp_tx.drain(..) {
            self.udp.release(buf);
        }
    }
}

/// Whether `job`, a get from an untrusted UDP sender, would read a value bigger than the
/// reply that sender may get.
fn over_budget(core: &mut Core, slot: ItemSlot, sink: &Sink, job: &Job<'_>) -> bool {
    let SinkKind::Udp { request_bytes, trusted: false, .. } = sink.kind else { return false };
    if !matches!(job.op, Op::Get { .. }) {
        return false;
    }
    let budget = (frame::AMPLIFICATION_MAX * request_bytes) as u64;
    matches!(core.item_value_len(slot, job.key), Ok(Some(len)) if len > budget)
}

/// Deletes every key of this core (flush_all's part here); only an error is a reply.
fn clear_here(core: &mut Core, out: &mut Vec<u8>) {
    if let Err(error) = crate::execute::clear(core) {
        out.extend_from_slice(crate::execute::store_error(error));
    }
}

/// The doors of a node's `cores` cores on `addr` (port 0: one free port for all), their rings
/// connected. Door i belongs on core i's loop.
pub fn doors(
    addr: SocketAddr,
    cores: u32,
    config: &DoorConfig,
    node_stats: Arc<NodeStats>,
) -> io::Result<(Vec<Door>, Arc<DoorStats>)> {
    let started_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stats = Arc::new(DoorStats::new(cores, started_s));
    if addr.port() != 0 {
        // SO_REUSEPORT would let this node share a port another process (of this user)
        // listens on: a plain bind first says whether the port is taken.
        let taken = |e: io::Error| {
            io::Error::new(e.kind(), format!("cannot listen on {addr} for memcache: {e}"))
        };
        drop(std::net::TcpListener::bind(addr).map_err(taken)?);
        drop(std::net::UdpSocket::bind(addr).map_err(taken)?);
    }
    let mut doors = Vec::with_capacity(cores as usize);
    let mut addr = addr;
    for core in 0..cores {
        let sockets = bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {addr} for memcache: {e}"))
        })?;
        let door = Door::new(core, config.clone(), sockets, stats.clone(), node_stats.clone())?;
        addr = door.local_addr()?;
        doors.push(door);
    }
    let wakers = doors.iter().map(Door::waker).collect();
    for (door, lanes) in doors.iter_mut().zip(crate::lanes::connect(wakers, config.ring_jobs_max)) {
        door.connect_lanes(lanes);
    }
    Ok((doors, stats))
}
