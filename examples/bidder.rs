//! An ad bidder as #16 tried cradle: per bid, a pipelined multi-get of 16 user segments
//! within a deadline, a decrement of the campaign's budget that never goes below 0, and an
//! impression record that expires. Several bidder threads share a few hot campaigns, so the
//! budget decrements contend. The budget is an INCR by -1 with a floor of 0 (one round trip,
//! the server refuses below the floor); `--counter cas` runs the GET + CAS loop it replaced,
//! for comparison. Impressions are written with a TTL (`--impression-ttl`, 1 hour).
//!
//! Prints bids/s, the p50 and p99 of one bid, CAS retries per decrement, and the budgets
//! left, and exits 1 if a budget went below 0 or the decrements do not add up.
//!
//! ```sh
//! cargo build --release --bin cradle --example bidder
//! target/release/cradle node --listen 127.0.0.1:7500 --cores 1 --durability memory --data-dir /tmp/bid &
//! target/release/examples/bidder --server 127.0.0.1:7500 --bids 20000 --bidders 4 --campaigns 4
//! target/release/examples/bidder --server 127.0.0.1:7500 --bids 20000 --bidders 4 --campaigns 4 --counter cas
//! ```

use client::{CasOutcome, Client, ClientConfig, Error, IncrOutcome, RequestOptions};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SEGMENTS_PER_USER: usize = 16;
const USERS: usize = 256;
/// How long a bid may wait for its segments before it bids without the missing ones.
const SEGMENTS_BUDGET: Duration = Duration::from_millis(5);

/// How a bid takes from its campaign's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    /// INCR by -1 with a floor of 0: one round trip.
    Incr,
    /// GET, then CAS until no other bidder won meanwhile (before the server had INCR).
    Cas,
}

/// What to run (the flags).
pub(crate) struct Args {
    pub(crate) server: SocketAddr,
    pub(crate) bids: usize,
    pub(crate) bidders: usize,
    pub(crate) campaigns: usize,
    pub(crate) budget: i64,
    pub(crate) counter: Counter,
    /// Seconds an impression record lives.
    pub(crate) impression_ttl: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: "127.0.0.1:7500".parse().unwrap(),
        bids: 20_000,
        bidders: 4,
        campaigns: 4,
        budget: 1_000_000,
        counter: Counter::Incr,
        impression_ttl: 3600,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--server" => args.server = value.parse().map_err(|e| bad(&e))?,
            "--bids" => args.bids = value.parse().map_err(|e| bad(&e))?,
            "--bidders" => args.bidders = value.parse().map_err(|e| bad(&e))?,
            "--campaigns" => args.campaigns = value.parse().map_err(|e| bad(&e))?,
            "--budget" => args.budget = value.parse().map_err(|e| bad(&e))?,
            "--impression-ttl" => args.impression_ttl = value.parse().map_err(|e| bad(&e))?,
            "--counter" => {
                args.counter = match value.as_str() {
                    "incr" => Counter::Incr,
                    "cas" => Counter::Cas,
                    _ => return Err(bad(&"not incr or cas")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.bidders == 0 || args.campaigns == 0 {
        return Err("--bidders and --campaigns must be positive".into());
    }
    Ok(args)
}

fn budget_key(campaign: usize) -> Vec<u8> {
    format!("budget:{campaign}").into_bytes()
}

fn parse(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes).ok().and_then(|text| text.parse().ok()).unwrap_or(0)
}

/// Takes one from the campaign's budget unless it is spent; returns whether it did, and
/// counts the CAS retries on the way (`Counter::Cas`).
fn decrement(
    client: &mut Client,
    counter: Counter,
    campaign: usize,
    retries: &mut u64,
) -> Result<bool, Error> {
    let key = budget_key(campaign);
    if counter == Counter::Incr {
        return match client.incr(&key, -1, Some(0))? {
            IncrOutcome::Counted { .. } => Ok(true),
            IncrOutcome::BelowFloor { .. } => Ok(false),
        };
    }
    loop {
        let Some(current) = client.get(&key)? else { return Ok(false) };
        let left = parse(&current.bytes);
        if left < 1 {
            return Ok(false);
        }
        match client.cas(&key, current.version, (left - 1).to_string().as_bytes())? {
            CasOutcome::Swapped { .. } => return Ok(true),
            CasOutcome::Mismatch { .. } => *retries += 1,
        }
    }
}

/// What one bidder did.
#[derive(Default)]
struct Tally {
    bids: u64,
    won: u64,
    refused: u64,
    cas_retries: u64,
    segments_missing: u64,
    errors: u64,
    /// The first few errors, to say what they were.
    first_errors: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: &str, error: &Error) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(format!("{what}: {error}"));
        }
    }
}

/// What each bidder thread is given.
#[derive(Clone, Copy)]
struct Bidder {
    server: SocketAddr,
    id: usize,
    bids: usize,
    campaigns: usize,
    counter: Counter,
    impression_ttl: u32,
}

fn bidder(b: Bidder) -> (Tally, Histogram<u64>) {
    let Bidder { server, id, bids, campaigns, counter, impression_ttl } = b;
    let mut client = Client::connect(ClientConfig::new(vec![server])).expect("connect");
    let mut tally = Tally::default();
    let mut latency_us = Histogram::<u64>::new(3).unwrap();
    for n in 0..bids {
        let started = Instant::now();
        let user = (id * 7919 + n) % USERS;
        let keys: Vec<String> =
            (0..SEGMENTS_PER_USER).map(|s| format!("user:{user}:segment:{s}")).collect();
        let options = RequestOptions::within(started, SEGMENTS_BUDGET);
        let segments = match client.start_get_many(&keys, options) {
            Ok(multi) => client.finish_get_many(multi),
            Err(error) => {
                tally.error("multi-get", &error);
                continue;
            }
        };
        tally.segments_missing +=
            segments.iter().filter(|s| !matches!(s, Ok(Some(_)))).count() as u64;
        match decrement(&mut client, counter, (id + n) % campaigns, &mut tally.cas_retries) {
            Ok(true) => {
                tally.won += 1;
                let impression = format!("imp:{id}:{n}");
                let record = format!("user {user}");
                if let Err(error) =
                    client.put_with_ttl(impression.as_bytes(), record.as_bytes(), impression_ttl)
                {
                    tally.error("impression", &error);
                }
            }
            Ok(false) => tally.refused += 1,
            Err(error) => tally.error("budget", &error),
        }
        tally.bids += 1;
        latency_us.record((started.elapsed().as_micros() as u64).max(1)).unwrap();
    }
    (tally, latency_us)
}

fn main() -> Result<(), String> {
    let summary = run(&parse_args()?)?;
    println!("{summary}");
    Ok(())
}

/// Sets up users and budgets, runs the bidders, checks the budgets; returns the summary
/// (`tests/bidder.rs` runs it against a real node).
pub(crate) fn run(args: &Args) -> Result<String, String> {
    let mut setup =
        Client::connect(ClientConfig::new(vec![args.server])).map_err(|e| e.to_string())?;
    for user in 0..USERS {
        let keys: Vec<String> =
            (0..SEGMENTS_PER_USER).map(|s| format!("user:{user}:segment:{s}")).collect();
        for key in keys {
            setup.put(key.as_bytes(), b"segment-bits").map_err(|e| e.to_string())?;
        }
    }
    for campaign in 0..args.campaigns {
        setup
            .put(&budget_key(campaign), args.budget.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let per_bidder = args.bids / args.bidders;
    let threads: Vec<_> = (0..args.bidders)
        .map(|id| {
            let b = Bidder {
                server: args.server,
                id,
                bids: per_bidder,
                campaigns: args.campaigns,
                counter: args.counter,
                impression_ttl: args.impression_ttl,
            };
            std::thread::spawn(move || bidder(b))
        })
        .collect();
    let mut total = Tally::default();
    let mut latency_us = Histogram::<u64>::new(3).unwrap();
    for thread in threads {
        let (tally, latency) = thread.join().map_err(|_| "a bidder panicked")?;
        latency_us.add(&latency).unwrap();
        total.bids += tally.bids;
        total.won += tally.won;
        total.refused += tally.refused;
        total.cas_retries += tally.cas_retries;
        total.segments_missing += tally.segments_missing;
        total.errors += tally.errors;
        total.first_errors.extend(tally.first_errors);
    }
    let elapsed = started.elapsed();
    let mut left_total = 0;
    for campaign in 0..args.campaigns {
        let left = setup
            .get(&budget_key(campaign))
            .map_err(|e| e.to_string())?
            .map_or(0, |v| parse(&v.bytes));
        if left < 0 {
            return Err(format!("campaign {campaign}'s budget went below 0: {left}"));
        }
        left_total += left;
    }
    let mut summary = format!(
        "{} bids by {} bidders over {} campaigns ({:?}) in {elapsed:.2?}: {:.0} bids/s, bid p50 {} us, p99 {} us\n",
        total.bids,
        args.bidders,
        args.campaigns,
        args.counter,
        total.bids as f64 / elapsed.as_secs_f64(),
        latency_us.value_at_quantile(0.5),
        latency_us.value_at_quantile(0.99),
    );
    summary += &format!(
        "won {}, refused (budget spent) {}, CAS retries {} ({:.2} per decrement), segments missing {}, errors {}\n",
        total.won,
        total.refused,
        total.cas_retries,
        total.cas_retries as f64 / total.won.max(1) as f64,
        total.segments_missing,
        total.errors,
    );
    let spent = args.budget * args.campaigns as i64 - left_total;
    summary += &format!("budgets left {left_total}, spent {spent}");
    if spent != total.won as i64 {
        return Err(format!(
            "{spent} spent from the budgets but {} bids won\n{summary}",
            total.won
        ));
    }
    if total.errors > 0 {
        return Err(format!("{} errors, first: {:?}\n{summary}", total.errors, total.first_errors));
    }
    Ok(summary)
}
