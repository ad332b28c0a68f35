//! Recorded histories for the linearizability checker (`testkit::linearizability`): clients
//! that run random PUT, CAS, GET and DELETE on a few keys and record each operation with its
//! times and answer, final reads, and the check with a second opinion when it is inconclusive.
//! Shared by the crash test and the cluster's partition test.

use client::{CasOutcome, Client, ClientConfig, Error};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::linearizability::{self, Answer, Call, Failure, Operation, Options};
use testkit::Rng;

/// After its client gave up, how long an unanswered operation could still take effect, for a
/// second opinion when the first check is inconclusive.
const EFFECT_AFTER_GIVING_UP_MAX: Duration = Duration::from_secs(5);

/// What one client did.
#[derive(Default)]
pub(crate) struct ClientLog {
    pub(crate) ops: Vec<Operation>,
    /// Errors by kind (all recorded as unanswered operations).
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) retransmits: u64,
}

/// The keys the clients share.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) prefix: &'static str,
    pub(crate) count: u64,
}

impl Keys {
    pub(crate) fn name(&self, key: u64) -> Vec<u8> {
        format!("{}-{key}", self.prefix).into_bytes()
    }
}

/// A client of `servers` whose requests are ended by the resend window, not the attempt
/// budget: a request in flight across a kill or a failover is resent until someone answers.
pub(crate) fn client_config(servers: &[SocketAddr], seed: u64) -> ClientConfig {
    let mut config = ClientConfig::new(servers.to_vec());
    config.seed = seed;
    config.attempts_per_server = 1_000;
    config
}

/// Until `stop`: random operations on `keys`, each recorded with its times and answer; an
/// error of any kind is recorded as an unanswered operation (it may have been applied).
pub(crate) fn run_client(
    id: u64,
    servers: &[SocketAddr],
    keys: &Keys,
    seed: u64,
    start: Instant,
    stop: &AtomicBool,
) -> ClientLog {
    let mut rng = Rng::from_seed(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let config = client_config(servers, rng.next_u64());
    let mut client = Client::connect(config).expect("client connects");
    let mut log = ClientLog::default();
    // The latest version this client saw of each key: what its CASes expect.
    let mut seen = vec![0u64; keys.count as usize];
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = rng.below(keys.count);
        sequence += 1;
        let value = format!("c{id}-s{sequence}").into_bytes();
        let call = match rng.below(100) {
            0..=34 => Call::Put { value },
            35..=64 => {
                let expected_version = if rng.chance(0.1) { 0 } else { seen[key as usize] };
                Call::Cas { expected_version, value }
            }
            65..=91 => Call::Get,
            _ => Call::Delete,
        };
        let invoked = start.elapsed();
        let answer = perform(&mut client, &keys.name(key), &call).unwrap_or_else(|error| {
            *log.errors.entry(error_kind(&error)).or_default() += 1;
            Answer::Unknown
        });
        let returned = start.elapsed();
        if let Some(version) = version_seen(&answer) {
            seen[key as usize] = version;
        }
        log.ops.push(Operation {
            client: id,
            key: keys.name(key),
            call,
            answer,
            invoked,
            returned,
        });
    }
    log.retransmits = client.client_stats().retransmits;
    log
}

pub(crate) fn perform(client: &mut Client, key: &[u8], call: &Call) -> Result<Answer, Error> {
    Ok(match call {
        Call::Get => Answer::Read(client.get(key)?.map(|value| (value.bytes, value.version))),
        Call::Put { value } => Answer::Written { version: client.put(key, value)? },
        Call::Cas { expected_version, value } => match client.cas(key, *expected_version, value)? {
            CasOutcome::Swapped { version } => Answer::Swapped { version },
            CasOutcome::Mismatch { current_version } => Answer::Mismatch { current_version },
        },
        Call::Delete => Answer::Deleted { existed: client.delete(key)? },
    })
}

/// The key's version an answer tells (0: absent).
fn version_seen(answer: &Answer) -> Option<u64> {
    match answer {
        Answer::Read(read) => Some(read.as_ref().map_or(0, |(_, version)| *version)),
        Answer::Written { version } | Answer::Swapped { version } => Some(*version),
        Answer::Mismatch { current_version } => Some(*current_version),
        Answer::Deleted { .. } => Some(0),
        Answer::Unknown => None,
    }
}

/// A short name per kind of error. No error proves a write was not applied: a timeout or a
/// transport error says nothing, and the statuses a node can refuse a write with after a
/// crash (BUSY, NO_SPACE, UNAVAILABLE from a poisoned store) may come after the write reached
/// the log; PROTOCOL.md promises "not applied" for none of them.
fn error_kind(error: &Error) -> String {
    match error {
        Error::Timeout { .. } => "timeout".to_string(),
        Error::Status(status) => format!("status {status:?}"),
        Error::Io(_) => "i/o".to_string(),
        other => format!("{other}"),
    }
}

/// After the run: one read of every key, recorded as client `id`'s operations (the state the
/// servers ended with must follow from the history too).
pub(crate) fn final_reads(
    servers: &[SocketAddr],
    keys: &Keys,
    id: u64,
    seed: u64,
    start: Instant,
) -> Vec<Operation> {
    let mut client = Client::connect(client_config(servers, seed ^ 0xF1A1)).expect("connects");
    (0..keys.count)
        .map(|key| {
            let invoked = start.elapsed();
            let answer = perform(&mut client, &keys.name(key), &Call::Get)
                .unwrap_or_else(|error| panic!("final read of key {key} failed: {error}"));
            let returned = start.elapsed();
            Operation {
                client: id,
                key: keys.name(key),
                call: Call::Get,
                answer,
                invoked,
                returned,
            }
        })
        .collect()
}

/// Panics with the checker's explanation (and `replay`, how to run it again) unless
/// `history` is linearizable.
pub(crate) fn check_history(what: &str, replay: &str, history: &[Operation]) {
    let started = Instant::now();
    let verdict = linearizability::check(history);
    let took = started.elapsed();
    let failure = match verdict {
        Ok(summary) => return eprintln!("{what}: linearizable ({summary:?}), checked in {took:?}"),
        Err(failure @ Failure::Inconclusive { .. }) => {
            // Too many unanswered operations for a search that lets them take effect at any
            // time: with the bound the protocol gives (no resend after the client gave up,
            // loopback delivers in far less than this), there is a verdict that explains.
            let options = Options {
                unanswered_effect_max: Some(EFFECT_AFTER_GIVING_UP_MAX),
                ..Options::default()
            };
            let bounded = match linearizability::check_with(history, options) {
                Ok(_) => "linearizable".to_string(),
                Err(failure) => failure.to_string(),
            };
            format!(
                "{failure}\nwith unanswered operations taking effect at most \
                 {EFFECT_AFTER_GIVING_UP_MAX:?} after their client gave up: {bounded}"
            )
        }
        Err(failure) => failure.to_string(),
    };
    panic!("{what}: the history is not linearizable ({replay}), checked in {took:?}:\n{failure}");
}
