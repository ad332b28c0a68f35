//! `cradle bench`: a load generator for cradle and for memcached (its UDP protocol), so both
//! are measured by the same tool in the same run.
//!
//! One thread, one non-blocking UDP socket driven with recvmmsg/sendmmsg batches (the
//! dataplane's `UdpPort`), requests patched from pre-encoded templates, a preallocated ring of
//! request slots indexed by id, no resends: a request unanswered after `--timeout-ms` is
//! counted as a timeout and its slot freed. Closed loop (`--in-flight` requests always out)
//! or open loop (`--rate`, Poisson arrivals, latency from the intended send time). Every run
//! is bounded by `--warmup` + `--duration` and stops by itself.

mod cradle;
mod engine;
mod memcache;
mod report;
mod workload;

use engine::{Codec, Engine, Feed, Plan, IN_FLIGHT_MAX};
use report::{Counters, Percentiles};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;
use workload::{KeyChooser, Keys, PreloadFeed, RandomFeed, Zipf};

/// Which server protocol the generator speaks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// cradle's own UDP protocol.
    Cradle,
    /// memcached's UDP frame header and text protocol.
    MemcacheUdp,
}

/// What the measured requests do.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpMix {
    /// Only GETs (of preloaded keys).
    Get,
    /// Only SETs.
    Set,
    /// GETs and SETs in `--mix-get-ratio`.
    Mix,
}

/// How keys are drawn.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with skew `--zipf-theta` (0.99 by default, as in YCSB).
    Zipf,
}

/// `cradle bench` options.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// The server's HOST:PORT (for cradle, any core's port: the partition map names the rest).
    #[arg(long)]
    server: String,
    /// The protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Cradle)]
    protocol: Protocol,
    /// The requests to send.
    #[arg(long, value_enum, default_value_t = OpMix::Get)]
    op: OpMix,
    /// Distinct keys (16 bytes each: `bench:` and ten digits).
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Bytes per value.
    #[arg(long, default_value_t = 32)]
    value_bytes: usize,
    /// Closed loop: requests kept in flight. Open loop: the most outstanding at once (later
    /// arrivals wait, and their wait counts in their latency).
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Open loop at this many requests per second (Poisson arrivals); closed loop without it.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    json: bool,
    /// Share of GETs with `--op mix`.
    #[arg(long, default_value_t = 0.9)]
    mix_get_ratio: f64,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    distribution: KeyDistribution,
    /// Skew of `--distribution zipf`, in (0, 1).
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Spin on the socket when idle instead of blocking in poll(2).
    #[arg(long)]
    busy_poll: bool,
    /// Send and receive one datagram per message: no UDP GSO for runs of requests to one
    /// server, no GRO for runs of replies (the servers see the same datagrams either way).
    #[arg(long)]
    no_udp_offload: bool,
    /// A request unanswered this long counts as a timeout (never resent).
    #[arg(long, default_value_t = 100)]
    timeout_ms: u64,
    /// Skip setting the keys before a get or mix run.
    #[arg(long)]
    no_preload: bool,
    /// Seed for keys, operations and arrivals (random by default).
    #[arg(long)]
    seed: Option<u64>,
    /// No per-second progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

impl BenchArgs {
    fn validate(&self) -> Result<(), String> {
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.in_flight == 0 || self.in_flight > IN_FLIGHT_MAX {
            return Err(format!("--in-flight must be in 1..={IN_FLIGHT_MAX}"));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number".into());
            }
        }
        let seconds_ok = |s: f64| s.is_finite() && (0.0..=86_400.0).contains(&s);
        if !seconds_ok(self.duration) || self.duration == 0.0 || !seconds_ok(self.warmup) {
            return Err("--duration must be in (0, 86400] and --warmup in [0, 86400]".into());
        }
        if !(0.0..=1.0).contains(&self.mix_get_ratio) {
            return Err("--mix-get-ratio must be in [0, 1]".into());
        }
        if !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0) {
            return Err("--zipf-theta must be in (0, 1)".into());
        }
        if self.timeout_ms == 0 {
            return Err("--timeout-ms must be at least 1".into());
        }
        Ok(())
    }

    fn get_ratio(&self) -> f64 {
        match self.op {
            OpMix::Get => 1.0,
            OpMix::Set => 0.0,
            OpMix::Mix => self.mix_get_ratio,
        }
    }

    fn plan(&self, seed: u64) -> Plan {
        Plan {
            in_flight: self.in_flight,
            rate: self.rate,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            timeout: Duration::from_millis(self.timeout_ms),
            busy_poll: self.busy_poll,
            progress: (!self.quiet).then(|| "bench".to_string()),
            seed,
        }
    }
}

/// Runs `cradle bench`.
pub(crate) fn run(args: &BenchArgs) -> Result<ExitCode, String> {
    args.validate()?;
    let server = resolve(&args.server)?;
    let seed = args.seed.unwrap_or_else(client::random_seed);
    let keys = Keys::new(args.keys as usize);
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let (counters, errors_by_kind) = match args.protocol {
        Protocol::Cradle => {
            let client_id = client::random_seed().max(1);
            let mut codec = cradle::CradleCodec::new(server, keys, args.value_bytes, client_id)?;
            let mut port = open_port(bind, &codec, args)?;
            codec.handshake(&mut port)?;
            drive(&codec, port, args, seed)?
        }
        Protocol::MemcacheUdp => {
            let codec = memcache::MemcacheCodec::new(server, keys, args.value_bytes)?;
            let port = open_port(bind, &codec, args)?;
            drive(&codec, port, args, seed)?
        }
    };
    let answered = counters.ok + counters.misses + counters.errors;
    print_result(args, &counters, &errors_by_kind);
    if answered == 0 {
        return Err(format!("no replies from {server}"));
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve(name: &str) -> Result<SocketAddr, String> {
    name.to_socket_addrs()
        .map_err(|e| format!("cannot resolve server {name}: {e}"))?
        .next()
        .ok_or_else(|| format!("server {name} has no address"))
}

fn open_port<C: Codec>(
    bind: SocketAddr,
    codec: &C,
    args: &BenchArgs,
) -> Result<dataplane::UdpPort, String> {
    let config = dataplane::UdpConfig {
        // Replies of either protocol are at most one 1,472-byte datagram each.
        buf_bytes: codec.request_bytes_max().max(proto::DATAGRAM_BYTES_ACCEPTED) + 1,
        offload: !args.no_udp_offload,
        ..dataplane::UdpConfig::default()
    };
    dataplane::UdpPort::bind(bind, config).map_err(|e| format!("cannot bind {bind}: {e}"))
}

/// Preloads (when the run reads), then runs the measured load.
fn drive<C: Codec>(
    codec: &C,
    port: dataplane::UdpPort,
    args: &BenchArgs,
    seed: u64,
) -> Result<(Counters, Vec<(String, u64)>), String> {
    let mut engine = Engine::new(codec, port);
    if args.get_ratio() > 0.0 && !args.no_preload {
        preload(&mut engine, args)?;
    }
    let chooser = match args.distribution {
        KeyDistribution::Uniform => KeyChooser::Uniform { n: u64::from(args.keys) },
        KeyDistribution::Zipf => KeyChooser::Zipf(Zipf::new(u64::from(args.keys), args.zipf_theta)),
    };
    let mut feed = RandomFeed::new(seed, chooser, args.get_ratio());
    let counters = engine.run(&args.plan(seed), &mut feed)?;
    let errors_by_kind = (0u16..)
        .zip(counters.error_codes)
        .filter(|&(_, count)| count > 0)
        .map(|(code, count)| (codec.error_name(code), count))
        .collect();
    Ok((counters, errors_by_kind))
}

/// SETs every key (closed loop, up to three attempts each) before a run that reads them.
fn preload<C: Codec>(engine: &mut Engine<'_, C>, args: &BenchArgs) -> Result<(), String> {
    let mut feed = PreloadFeed::new(args.keys as usize, 3);
    let plan = Plan {
        in_flight: args.in_flight.clamp(1, 64),
        rate: None,
        warmup: Duration::ZERO,
        // Bounded like every load: generous for the key count, still finite.
        duration: Duration::from_secs(60),
        timeout: Duration::from_millis(args.timeout_ms),
        busy_poll: args.busy_poll,
        progress: (!args.quiet).then(|| "preload".to_string()),
        seed: 0,
    };
    engine.run(&plan, &mut feed as &mut dyn Feed)?;
    if !args.quiet {
        eprintln!("preload: {} of {} keys stored, {} failed", feed.stored, args.keys, feed.failed);
    }
    if feed.stored == 0 {
        return Err(format!("preload stored no key on {}", args.server));
    }
    Ok(())
}

fn print_result(args: &BenchArgs, c: &Counters, errors_by_kind: &[(String, u64)]) {
    let p = Percentiles::of(&c.latency);
    let protocol = match args.protocol {
        Protocol::Cradle => "cradle",
        Protocol::MemcacheUdp => "memcache-udp",
    };
    let op = match args.op {
        OpMix::Get => "get",
        OpMix::Set => "set",
        OpMix::Mix => "mix",
    };
    let round = |x: f64| (x * 10.0).round() / 10.0;
    if args.json {
        let errors: serde_json::Map<String, serde_json::Value> =
            errors_by_kind.iter().map(|(name, count)| (name.clone(), (*count).into())).collect();
        let object = serde_json::json!({
            "protocol": protocol,
            "server": args.server,
            "op": op,
            "mix_get_ratio": args.get_ratio(),
            "distribution": format!("{:?}", args.distribution).to_lowercase(),
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "in_flight": args.in_flight,
            "rate": args.rate,
            "duration": round(c.seconds() * 10.0) / 10.0,
            "warmup": args.warmup,
            "busy_poll": args.busy_poll,
            "udp_offload": !args.no_udp_offload,
            "ops": c.ok + c.misses,
            "ops_per_sec": c.ops_per_sec().round(),
            "p50_us": round(p.p50),
            "p90_us": round(p.p90),
            "p99_us": round(p.p99),
            "p999_us": round(p.p999),
            "p9999_us": round(p.p9999),
            "max_us": round(p.max),
            "mean_us": round(p.mean),
            "misses": c.misses,
            "errors": c.errors,
            "errors_by_kind": errors,
            "timeouts": c.timeouts,
            "late": c.late,
            "malformed": c.malformed,
        });
        println!("{object}");
        return;
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate:.0}/s"),
        None => format!("closed loop, {} in flight", args.in_flight),
    };
    println!(
        "{protocol} {op} on {}: {mode}, {} keys, {} B values, {:.1} s",
        args.server,
        args.keys,
        args.value_bytes,
        c.seconds()
    );
    println!("  {:.0} ops/s ({} ops)", c.ops_per_sec(), c.ok + c.misses);
    println!(
        "  latency µs: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  mean {:.1}",
        p.p50, p.p99, p.p999, p.p9999, p.max, p.mean
    );
    println!(
        "  misses {}  errors {}  timeouts {}  late {}  malformed {}",
        c.misses, c.errors, c.timeouts, c.late, c.malformed
    );
    for (name, count) in errors_by_kind {
        println!("  error {name}: {count}");
    }
}
