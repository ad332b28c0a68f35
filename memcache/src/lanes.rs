//! Hand-over between cores: one single-producer single-consumer ring (wait-free, no lock)
//! for each ordered pair of cores. A core that parsed a command for a key another core owns
//! sends it the job; the owner runs it and sends the reply bytes back on its own ring to the
//! first. A push wakes the receiving loop (an eventfd) at most once per loop iteration.
//!
//! A full ring: a job waits in a bounded overflow queue (`ring_jobs_max`; past that the
//! client gets `SERVER_ERROR busy`); a reply waits in an unbounded one (each reply answers a
//! job the owner took, so their number is bounded by the jobs in flight).

use crate::execute::OwnedJob;
use mio::Waker;
use rtrb::{Consumer, Producer, RingBuffer};
use std::collections::VecDeque;
use std::sync::Arc;

/// A sink (a connection or a UDP request) on the core that parsed the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SinkRef {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Where a reply goes: a part of a sink on a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub(crate) core: u32,
    pub(crate) sink: SinkRef,
    pub(crate) seq: u64,
}

/// What travels on a ring.
#[derive(Debug)]
pub(crate) enum Envelope {
    /// Run this job and answer `reply_to`.
    Job { reply_to: ReplyTo, job: OwnedJob },
    /// The reply to a job this core sent.
    Done { sink: SinkRef, seq: u64, bytes: Vec<u8> },
}

/// One core's ends of the rings.
#[derive(Debug, Default)]
pub struct Lanes {
    me: u32,
    /// To each other core (None for this one).
    outgoing: Vec<Option<Producer<Envelope>>>,
    /// From each other core.
    incoming: Vec<Option<Consumer<Envelope>>>,
    wakers: Vec<Arc<Waker>>,
    /// Waiting for room, per core.
    overflow: Vec<VecDeque<Envelope>>,
    /// Pushed to since the last `wake`.
    to_wake: Vec<bool>,
    jobs_waiting_max: usize,
}

/// Creates the rings of `wakers.len()` cores (core i wakes through `wakers[i]`), with room
/// for `capacity` envelopes each; returns each core's lanes.
pub fn connect(wakers: Vec<Arc<Waker>>, capacity: usize) -> Vec<Lanes> {
    let cores = wakers.len();
    let mut lanes: Vec<Lanes> = (0..cores)
        .map(|me| Lanes {
            me: me as u32,
            outgoing: (0..cores).map(|_| None).collect(),
            incoming: (0..cores).map(|_| None).collect(),
            wakers: wakers.clone(),
            overflow: (0..cores).map(|_| VecDeque::new()).collect(),
            to_wake: vec![false; cores],
            jobs_waiting_max: capacity,
        })
        .collect();
    for from in 0..cores {
        for to in (0..cores).filter(|&to| to != from) {
            let (producer, consumer) = RingBuffer::new(capacity);
            lanes[from].outgoing[to] = Some(producer);
            lanes[to].incoming[from] = Some(consumer);
        }
    }
    lanes
}

impl Lanes {
    /// Lanes of a node with one core (nothing to hand over).
    pub fn single() -> Lanes {
        Lanes::default()
    }

    /// Sends a job; false when it cannot wait any more (the caller answers busy).
    pub(crate) fn send_job(&mut self, to: u32, reply_to: ReplyTo, job: OwnedJob) -> bool {
        if self.overflow[to as usize].len() >= self.jobs_waiting_max {
            return false;
        }
        self.send(to, Envelope::Job { reply_to, job });
        true
    }

    /// Sends a reply (never refused).
    pub(crate) fn send_done(&mut self, to: u32, sink: SinkRef, seq: u64, bytes: Vec<u8>) {
        self.send(to, Envelope::Done { sink, seq, bytes });
    }

    fn send(&mut self, to: u32, envelope: Envelope) {
        assert_ne!(to, self.me, "a core does not hand work to itself");
        let waiting = &mut self.overflow[to as usize];
        let producer = self.outgoing[to as usize].as_mut().expect("a ring to every other core");
        if waiting.is_empty() {
            if let Err(rtrb::PushError::Full(back)) = producer.push(envelope) {
                waiting.push_back(back);
            }
        } else {
            waiting.push_back(envelope);
        }
        self.to_wake[to as usize] = true;
    }

    /// Moves waiting envelopes into rings that have room again.
    pub(crate) fn retry(&mut self) -> bool {
        let mut left = false;
        for (to, waiting) in self.overflow.iter_mut().enumerate() {
            let Some(producer) = self.outgoing[to].as_mut() else { continue };
            while let Some(envelope) = waiting.pop_front() {
                if let Err(rtrb::PushError::Full(back)) = producer.push(envelope) {
                    waiting.push_front(back);
                    break;
                }
                self.to_wake[to] = true;
            }
            left |= !waiting.is_empty();
        }
        left
    }

    /// Wakes every core pushed to since the last call (one eventfd write each).
    pub(crate) fn wake(&mut self) {
        for (core, flag) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                // A failed wake leaves the receiver to find the envelope within its
                // `block_max` (10 ms): late, never lost.
                let _ = self.wakers[core].wake();
            }
        }
    }

    /// The next envelope from any core (round robin is not needed: each call drains).
    pub(crate) fn receive(&mut self) -> Option<Envelope> {
        self.incoming.iter_mut().flatten().find_map(|c| c.pop().ok())
    }
}
