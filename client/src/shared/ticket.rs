//! Tickets: where a caller of `SharedClient` picks up an outcome.

use super::Sink;
use crate::error::Error;
use crate::outcome::Outcome;
use crate::request::{RequestId, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One outcome, filled once by the sink, taken once by the ticket.
#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    filled: Condvar,
}

/// Fills a slot once: with the outcome, or, dropped unused (a sink that never ran, because
/// the driver thread panicked), with a failure, so no `wait` hangs.
struct Filler {
    slot: Option<Arc<Slot>>,
}

impl Filler {
    fn fill(&mut self, outcome: Outcome) {
        if let Some(slot) = self.slot.take() {
            // A poisoned slot lock means a waiter panicked holding it: the value is still ours.
            let mut held = slot.outcome.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *held = Some(outcome);
            drop(held);
            slot.filled.notify_all();
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let lost = std::io::Error::other("the request's outcome was lost (a bug in cradle)");
        self.fill(Outcome::Failed(Error::Io(lost)));
    }
}

/// A submitted request of a `SharedClient`: its outcome, once it completed. Every request
/// completes (within its retry budget and resend window, or its deadline), so `wait` returns.
#[must_use = "a ticket is the only way to the request's outcome"]
pub struct Ticket {
    id: RequestId,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("id", &self.id).field("done", &self.is_done()).finish()
    }
}

impl Ticket {
    /// An unsubmitted ticket and the sink that fills it.
    pub(super) fn new() -> (Ticket, Sink) {
        let slot = Arc::new(Slot::default());
        let mut filler = Filler { slot: Some(slot.clone()) };
        let sink: Sink = Box::new(move |outcome| filler.fill(outcome));
        (Ticket { id: RequestId(0), slot }, sink)
    }

    pub(super) fn with_id(self, id: RequestId) -> Ticket {
        Ticket { id, ..self }
    }

    /// The request's id (for `SharedClient::cancel`).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Whether the outcome is there.
    pub fn is_done(&self) -> bool {
        self.slot.outcome.lock().expect("ticket slot").is_some()
    }

    /// Waits up to `timeout` for the outcome; returns whether it is there.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let limit = Instant::now() + timeout;
        let mut outcome = self.slot.outcome.lock().expect("ticket slot");
        while outcome.is_none() {
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            outcome = self.slot.filled.wait_timeout(outcome, left).expect("ticket slot").0;
        }
        true
    }

    /// Waits for the outcome and returns it.
    pub fn wait(self) -> Outcome {
        let mut outcome = self.slot.outcome.lock().expect("ticket slot");
        loop {
            if let Some(outcome) = outcome.take() {
                return outcome;
            }
            outcome = self.slot.filled.wait(outcome).expect("ticket slot");
        }
    }
}

/// The GETs of `SharedClient::start_get_many`, in key order.
#[derive(Debug)]
#[must_use = "dropping it forgets the values (the GETs still complete)"]
pub struct PendingGets {
    tickets: Vec<Ticket>,
}

impl PendingGets {
    pub(super) fn new(tickets: Vec<Ticket>) -> Self {
        PendingGets { tickets }
    }

    /// Whether every GET completed.
    pub fn is_done(&self) -> bool {
        self.tickets.iter().all(Ticket::is_done)
    }

    /// The GETs' tickets, in key order (their ids, to cancel one).
    pub fn tickets(&self) -> &[Ticket] {
        &self.tickets
    }

    /// Waits for every GET: each key's value (`None`: absent) or error, in key order.
    pub fn wait(self) -> Vec<Result<Option<Value>, Error>> {
        self.tickets.into_iter().map(|ticket| ticket.wait().into_value()).collect()
    }
}
