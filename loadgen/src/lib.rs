//! The load generator behind `cradle bench`: for cradle, for memcached (its UDP protocol) and
//! for a bare echo (a path's limit), so all are measured by the same tool in the same run.
//!
//! One thread, one port of the dataplane's: a non-blocking UDP socket driven with
//! recvmmsg/sendmmsg batches (`UdpPort`) by default, or a DPDK queue (`--io dpdk`, cargo
//! feature `dpdk`), so both ends of a benchmark can bypass the kernel. Requests are patched
//! from pre-encoded templates, a preallocated ring of
//! request slots indexed by id, no resends: a request unanswered after `--timeout-ms` is
//! counted as a timeout and its slot freed. Closed loop (`--in-flight` requests always out)
//! or open loop (`--rate`, Poisson arrivals, latency from the intended send time). A GET may
//! read several keys in one datagram (`--keys-per-request`); it is done when every key is
//! answered, and the report counts keys as well as requests. Every run is bounded by
//! `--warmup` + `--duration` and stops by itself.
//!
//! It must never resend (a timeout is a measurement), never allocate per request while
//! measuring, and never run without a bound on its time.
#![forbid(unsafe_code)]

mod cradle;
mod echo;
mod engine;
mod memcache;
mod report;
mod transport;
mod workload;

use dataplane::Port;
use engine::{Codec, Engine, Feed, Plan, IN_FLIGHT_MAX, KEYS_PER_REQUEST_MAX};
use report::{Counters, Percentiles};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;
use workload::{KeyChooser, Keys, PreloadFeed, RandomFeed, Zipf};

/// Which server protocol the generator speaks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// cradle's own UDP protocol.
    Cradle,
    /// memcached's UDP frame header and text protocol.
    MemcacheUdp,
    /// Byte-exact echoes of fixed requests, against `examples/echo.rs` (the path's limit).
    Echo,
}

/// What the measured requests do.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpMix {
    /// Only GETs (of preloaded keys).
    Get,
    /// Only SETs.
    Set,
    /// GETs and SETs in `--mix-get-ratio`.
    Mix,
}

/// How keys are drawn.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with skew `--zipf-theta` (0.99 by default, as in YCSB).
    Zipf,
}

/// `cradle bench` options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
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
    /// Keys each GET reads, in one datagram: for cradle that many GET messages packed back
    /// to back (as the client library's `get_many` sends them, at most 16), for memcached one
    /// `get k1 … kN` line. A request counts as done when every key was answered.
    #[arg(long, default_value_t = 1)]
    keys_per_request: usize,
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
    /// The generator's packet I/O: `socket` or `dpdk` (both ends can bypass the kernel; `dpdk`
    /// needs a build with the cargo feature `dpdk`).
    #[arg(long, value_enum, default_value_t = GeneratorIo::Socket)]
    io: GeneratorIo,
    /// With `--io dpdk`: the EAL arguments (its own `--file-prefix`, and the device, e.g.
    /// `--vdev net_memif0,role=client`).
    #[arg(long, allow_hyphen_values = true)]
    dpdk_eal: Option<String>,
    /// With `--io dpdk`: the generator's own IPv4 address and UDP port.
    #[arg(long, default_value = "127.0.0.2:40000")]
    dpdk_local: std::net::SocketAddrV4,
    /// Share of received datagrams the generator drops on purpose (seeded), to show the
    /// server copes with loss.
    #[arg(long, default_value_t = 0.0)]
    inject_loss: f64,
    /// Share of received datagrams the generator delivers late, behind 1 to 3 later ones.
    #[arg(long, default_value_t = 0.0)]
    inject_reorder: f64,
}

impl BenchArgs {
    fn validate(&self) -> Result<(), String> {
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.keys_per_request == 0 || self.keys_per_request > KEYS_PER_REQUEST_MAX {
            return Err(format!("--keys-per-request must be in 1..={KEYS_PER_REQUEST_MAX}"));
        }
        let cradle_max = cradle::CradleCodec::GETS_PER_DATAGRAM_MAX;
        if self.protocol == Protocol::Cradle && self.keys_per_request > cradle_max {
            return Err(format!(
                "--keys-per-request: at most {cradle_max} GETs fit one cradle datagram"
            ));
        }
        if self.keys_per_request > 1 && self.protocol == Protocol::Echo {
            return Err("--keys-per-request is for cradle and memcache-udp".into());
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
        if !(0.0..1.0).contains(&self.inject_loss) || !(0.0..1.0).contains(&self.inject_reorder) {
            return Err("--inject-loss and --inject-reorder must be in [0, 1)".into());
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
            keys_per_get: self.keys_per_request,
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
pub fn run(args: &BenchArgs) -> Result<ExitCode, String> {
    args.validate()?;
    let server = resolve(&args.server)?;
    match args.io {
        GeneratorIo::Dpdk => run_dpdk(args, server),
        _ => {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal address")
            } else {
                "[::]:0".parse().expect("literal address")
            };
            run_with_faults(args, server, open_port(bind, args)?)
        }
    }
}

/// Opens one DPDK queue at `--dpdk-local` (no fallback: the generator measures the path it
/// was asked for).
#[cfg(feature = "dpdk")]
fn run_dpdk(args: &BenchArgs, server: SocketAddr) -> Result<ExitCode, String> {
    use dataplane::dpdk::{split_eal_args, DpdkConfig, DpdkDevice};
    let eal = args.dpdk_eal.as_deref().ok_or(
        "--io dpdk needs --dpdk-eal \"EAL ARGS\" (e.g. \"-l 1 --no-huge --no-pci --vdev \
         net_memif0,role=client\")",
    )?;
    let config = DpdkConfig { eal_args: split_eal_args(eal), ..DpdkConfig::default() };
    let device = DpdkDevice::open(&config).map_err(|e| format!("--io dpdk: {e}"))?;
    let port = device.port(0, args.dpdk_local).map_err(|e| format!("--io dpdk: {e}"))?;
    eprintln!("bench: dpdk {} ({}) at {}", device.name(), device.mac(), args.dpdk_local);
    run_with_faults(args, server, port)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_: &BenchArgs, _: SocketAddr) -> Result<ExitCode, String> {
    Err("--io dpdk: this cradle was built without it; build with `cargo build --release \
         --features dpdk`"
        .into())
}

/// The generator's packet I/O.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeneratorIo {
    /// Kernel UDP sockets.
    #[default]
    Socket,
    /// A DPDK queue (cargo feature `dpdk`).
    Dpdk,
}

/// Wraps the port in seeded receive faults if asked (only then: the wrapper takes a lock per
/// burst).
fn run_with_faults<P: Port>(
    args: &BenchArgs,
    server: SocketAddr,
    port: P,
) -> Result<ExitCode, String> {
    if args.inject_loss == 0.0 && args.inject_reorder == 0.0 {
        return run_on(args, server, port);
    }
    let faults = dataplane::Faults {
        rx_drop: args.inject_loss,
        rx_reorder: args.inject_reorder,
        ..dataplane::Faults::NONE
    };
    let seed = args.seed.unwrap_or(1) ^ 0xfa17;
    run_on(args, server, dataplane::FaultyPort::new(port, faults, seed))
}

fn run_on<P: Port>(args: &BenchArgs, server: SocketAddr, mut port: P) -> Result<ExitCode, String> {
    let seed = args.seed.unwrap_or_else(client::random_seed);
    let keys = Keys::new(args.keys as usize);
    let (counters, errors_by_kind) = match args.protocol {
        Protocol::Cradle => {
            let client_id = client::random_seed().max(1);
            let map = cradle::CradleCodec::fetch_map(server, &mut port)?;
            let mut codec =
                cradle::CradleCodec::new(server, &map, keys, args.value_bytes, client_id)?;
            codec.handshake(&mut port)?;
            drive(&codec, port, args, seed)?
        }
        Protocol::MemcacheUdp => {
            let codec = memcache::MemcacheCodec::new(
                server,
                keys,
                args.value_bytes,
                args.keys_per_request,
            )?;
            drive(&codec, port, args, seed)?
        }
        Protocol::Echo => {
            let codec = echo::EchoCodec::new(server, args.value_bytes)?;
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

fn open_port(bind: SocketAddr, args: &BenchArgs) -> Result<dataplane::UdpPort, String> {
    // The largest request of any protocol: its value and at most a few hundred bytes of
    // header, key and framing (memcached's UDP requests stop at 65,000 bytes).
    let request_bytes_max = (args.value_bytes + 256).min(memcache::REQUEST_BYTES_MAX);
    let config = dataplane::UdpConfig {
        // Replies of every protocol are at most one 1,472-byte datagram each.
        buf_bytes: request_bytes_max.max(proto::DATAGRAM_BYTES_ACCEPTED) + 1,
        offload: !args.no_udp_offload,
        ..dataplane::UdpConfig::default()
    };
    dataplane::UdpPort::bind(bind, config).map_err(|e| format!("cannot bind {bind}: {e}"))
}

/// Preloads (when the run reads), then runs the measured load.
fn drive<C: Codec, P: Port>(
    codec: &C,
    port: P,
    args: &BenchArgs,
    seed: u64,
) -> Result<(Counters, Vec<(String, u64)>), String> {
    let mut port = port;
    let room = port.alloc_tx().map(|mut buf| {
        let room = dataplane::Buffer::capacity_mut(&mut buf).len();
        port.release(buf);
        room
    });
    if room.unwrap_or(0) < codec.request_bytes_max() {
        return Err(format!(
            "a request of {} bytes does not fit the port's buffers ({room:?} bytes)",
            codec.request_bytes_max()
        ));
    }
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
fn preload<C: Codec, P: Port>(
    engine: &mut Engine<'_, C, P>,
    args: &BenchArgs,
) -> Result<(), String> {
    let mut feed = PreloadFeed::new(args.keys as usize, 3);
    let plan = Plan {
        in_flight: args.in_flight.clamp(1, 64),
        keys_per_get: 1,
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
        Protocol::Echo => "echo",
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
            "io": format!("{:?}", args.io).to_lowercase(),
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
            "keys_per_request": args.keys_per_request,
            "ops": c.ok + c.misses,
            "ops_per_sec": c.ops_per_sec().round(),
            "keys_read": c.keys,
            "keys_per_sec": c.keys_per_sec().round(),
            "key_misses": c.key_misses,
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
    if args.keys_per_request > 1 {
        println!(
            "  {:.0} keys/s ({} keys, {} per GET, {} not found)",
            c.keys_per_sec(),
            c.keys,
            args.keys_per_request,
            c.key_misses
        );
    }
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
