//! Multi-gets of 16 keys against a running node, through each client API: the blocking
//! `Client::get_many` (one multi-get at a time), `Client::start_get_many` with several
//! multi-gets in flight from one thread, and `SharedClient::start_get_many` likewise. Prints
//! keys/s and the latency of one multi-get (p50, p99) per API, alternating the APIs in
//! rounds so a noisy neighbour hits each alike. Also `--deep N`: N GETs submitted at once,
//! with the socket's receive buffer left at the kernel default and then sized for N.
//!
//! ```sh
//! cargo build --release --bin cradle --example multiget_bench
//! target/release/cradle node --listen 127.0.0.1:7400 --cores 1 --durability memory --data-dir /tmp/mg &
//! target/release/examples/multiget_bench --server 127.0.0.1:7400 --seconds 2 --rounds 3
//! ```

use client::{Client, ClientConfig, MultiGet, RequestOptions, SharedClient, UdpTransport};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const KEYS_PER_GET: usize = 16;
const KEYS: usize = 4096;
const VALUE_BYTES: usize = 32;

struct Args {
    server: SocketAddr,
    seconds: f64,
    rounds: u32,
    depth: usize,
    deep: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: "127.0.0.1:7400".parse().unwrap(),
        seconds: 2.0,
        rounds: 3,
        depth: 8,
        deep: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--server" => args.server = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => args.rounds = value.parse().map_err(|e| bad(&e))?,
            "--depth" => args.depth = value.parse().map_err(|e| bad(&e))?,
            "--deep" => args.deep = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn key(i: usize) -> Vec<u8> {
    format!("segment:{i:05}").into_bytes()
}

/// The keys of multi-get number `n`: 16 consecutive keys, wrapping.
fn keys_of(n: usize) -> Vec<Vec<u8>> {
    (0..KEYS_PER_GET).map(|j| key((n * KEYS_PER_GET + j) % KEYS)).collect()
}

/// What one API did in one round.
struct Run {
    keys: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Run {
    fn new() -> Run {
        Run { keys: 0, errors: 0, elapsed: Duration::ZERO, latency_us: Histogram::new(3).unwrap() }
    }

    fn record(&mut self, started: Instant, found: usize, errors: usize) {
        self.keys += found as u64;
        self.errors += errors as u64;
        let us = started.elapsed().as_micros() as u64;
        self.latency_us.record(us.max(1)).unwrap();
    }
}

fn blocking_get_many(client: &mut Client, budget: Duration) -> Run {
    let mut run = Run::new();
    let begin = Instant::now();
    let mut n = 0;
    while begin.elapsed() < budget {
        let started = Instant::now();
        let keys = keys_of(n);
        match client.get_many(&keys) {
            Ok(values) => run.record(started, values.iter().flatten().count(), 0),
            Err(_) => run.record(started, 0, KEYS_PER_GET),
        }
        n += 1;
    }
    run.elapsed = begin.elapsed();
    run
}

fn pipelined(client: &mut Client, budget: Duration, depth: usize) -> Run {
    let mut run = Run::new();
    let begin = Instant::now();
    let mut n = 0;
    let mut in_flight: VecDeque<(Instant, MultiGet)> = VecDeque::new();
    while begin.elapsed() < budget || !in_flight.is_empty() {
        while in_flight.len() < depth && begin.elapsed() < budget {
            let keys = keys_of(n);
            n += 1;
            let multi = client.start_get_many(&keys, RequestOptions::default()).expect("room");
            in_flight.push_back((Instant::now(), multi));
        }
        // Completions come in order per server: collect the oldest when it is done.
        let (_, oldest) = in_flight.front_mut().expect("one in flight");
        if !client.wait_get_many(oldest, Duration::from_millis(1)) {
            continue;
        }
        let (started, multi) = in_flight.pop_front().unwrap();
        let values = client.finish_get_many(multi);
        let found = values.iter().filter(|value| matches!(value, Ok(Some(_)))).count();
        let errors = values.iter().filter(|value| value.is_err()).count();
        run.record(started, found, errors);
    }
    run.elapsed = begin.elapsed();
    run
}

fn shared_pipelined(client: &SharedClient, budget: Duration, depth: usize) -> Run {
    let mut run = Run::new();
    let begin = Instant::now();
    let mut n = 0;
    let mut in_flight = VecDeque::new();
    while begin.elapsed() < budget || !in_flight.is_empty() {
        while in_flight.len() < depth && begin.elapsed() < budget {
            let keys = keys_of(n);
            n += 1;
            let pending = client.start_get_many(&keys, RequestOptions::default()).expect("room");
            in_flight.push_back((Instant::now(), pending));
        }
        let (started, pending) = in_flight.pop_front().expect("one in flight");
        let values = pending.wait();
        let found = values.iter().filter(|value| matches!(value, Ok(Some(_)))).count();
        let errors = values.iter().filter(|value| value.is_err()).count();
        run.record(started, found, errors);
    }
    run.elapsed = begin.elapsed();
    run
}

fn report(name: &str, runs: &[Run]) {
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let (mut keys, mut errors, mut elapsed) = (0, 0, Duration::ZERO);
    for run in runs {
        latency.add(&run.latency_us).unwrap();
        keys += run.keys;
        errors += run.errors;
        elapsed += run.elapsed;
    }
    let rates: Vec<String> = runs
        .iter()
        .map(|run| format!("{:.0}", run.keys as f64 / run.elapsed.as_secs_f64()))
        .collect();
    println!(
        "{name:<44} {:>9.0} keys/s  (rounds: {})  multi-get p50 {} us, p99 {} us, errors {errors}",
        keys as f64 / elapsed.as_secs_f64(),
        rates.join(", "),
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
    );
}

/// `count` GETs submitted at once, then waited for: timeouts and resends, with the socket's
/// receive buffer at `recv_buffer` bytes asked (`None`: the kernel default).
fn deep(
    server: SocketAddr,
    count: usize,
    recv_buffer: Option<usize>,
) -> Result<String, client::Error> {
    let mut config = ClientConfig::new(vec![server]);
    config.in_flight_max = count;
    let mut transport = UdpTransport::for_server(server)?;
    if let Some(bytes) = recv_buffer {
        transport.set_recv_buffer_bytes(bytes)?;
    }
    let granted = transport.recv_buffer_bytes()?;
    let mut client = Client::with_transport(config, transport)?;
    client.map()?;
    let started = Instant::now();
    for i in 0..count {
        client.submit(client::Request::Get { key: key(i % KEYS) });
    }
    let (mut found, mut failed) = (0, 0);
    while let Some((_, outcome)) = client.wait(Duration::from_secs(10)) {
        match outcome.into_value() {
            Ok(_) => found += 1,
            Err(_) => failed += 1,
        }
    }
    let stats = client.client_stats();
    Ok(format!(
        "{count} GETs at once, receive buffer {granted} bytes: {found} answered, {failed} failed \
         ({} timeouts), {} resends, in {:?}",
        stats.timeouts,
        stats.retransmits,
        started.elapsed()
    ))
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let config = ClientConfig::new(vec![args.server]);
    let mut client = Client::connect(config.clone()).map_err(|e| e.to_string())?;
    for i in 0..KEYS {
        client.put(&key(i), &[i as u8; VALUE_BYTES]).map_err(|e| e.to_string())?;
    }
    if let Some(count) = args.deep {
        let sized = client::recv_buffer_bytes_for(count);
        println!("{}", deep(args.server, count, None).map_err(|e| e.to_string())?);
        println!("{}", deep(args.server, count, Some(sized)).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let shared = SharedClient::connect(config).map_err(|e| e.to_string())?;
    let budget = Duration::from_secs_f64(args.seconds);
    let (mut old, mut new, mut threaded) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        old.push(blocking_get_many(&mut client, budget));
        new.push(pipelined(&mut client, budget, args.depth));
        threaded.push(shared_pipelined(&shared, budget, args.depth));
    }
    println!(
        "{KEYS_PER_GET} keys per multi-get, {VALUE_BYTES}-byte values, {} s x {} rounds",
        args.seconds, args.rounds
    );
    report("Client::get_many (blocking, 1 in flight)", &old);
    report(&format!("Client::start_get_many ({} in flight)", args.depth), &new);
    report(&format!("SharedClient::start_get_many ({} in flight)", args.depth), &threaded);
    Ok(())
}
