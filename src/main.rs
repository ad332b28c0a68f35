//! `cradle`: the node and its command-line tools (see `cradle --help` and README.md).
#![forbid(unsafe_code)]

mod bulk;
mod commands;
mod config;
mod demo;
mod health;
mod health_watch;
mod io;
mod metrics;
mod node;
mod recovery;
mod up;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A low-latency key-value appliance over UDP.
#[derive(Parser, Debug)]
#[command(name = "cradle", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// (Parsed once per run: the node's many flags make its variant big, and that costs nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve: one pinned loop per core, core i on port PORT+i; prints `cradle ready` once serving.
    Node {
        /// A TOML config file (see docs/OPERATIONS.md); flags given here override it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: config::Flags,
    },
    /// Write a value (`-` reads it from stdin); prints the new version.
    Put {
        #[command(flatten)]
        servers: commands::Servers,
        /// The key.
        key: String,
        /// The value, or `-` for stdin.
        value: String,
        /// The key reads as absent this many seconds after the write (0: never).
        #[arg(long, value_name = "SECS")]
        ttl: Option<u32>,
    },
    /// Add N to the decimal counter at KEY (absent: 0) and print the new count; a negative
    /// N subtracts. With --floor, refused if the count would go below F: exit 1 and
    /// `below floor` on stderr, nothing written.
    Incr {
        #[command(flatten)]
        servers: commands::Servers,
        /// The key.
        key: String,
        /// The amount added (negative: subtracted).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_name = "N")]
        by: i64,
        /// The lowest count allowed.
        #[arg(long, allow_negative_numbers = true, value_name = "F")]
        floor: Option<i64>,
        /// Also set the key's expiry to this many seconds from now (0: none).
        #[arg(long, value_name = "SECS")]
        ttl: Option<u32>,
    },
    /// Print a key's raw value; exit 1 with `not found` when absent.
    Get {
        #[command(flatten)]
        servers: commands::Servers,
        /// The key.
        key: String,
    },
    /// Delete a key; exit 1 with `not found` when absent.
    Del {
        #[command(flatten)]
        servers: commands::Servers,
        /// The key.
        key: String,
    },
    /// Write a value only if the key's version is EXPECTED (0: only if absent); prints the new
    /// version, or exits 1 with the current one.
    Cas {
        #[command(flatten)]
        servers: commands::Servers,
        /// The key.
        key: String,
        /// The version the key must have.
        expected: u64,
        /// The value, or `-` for stdin.
        value: String,
    },
    /// Show a node's counters.
    Status {
        #[command(flatten)]
        servers: commands::Servers,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the partition map: per partition its hash range and replicas (primary, backups,
    /// learners) with how many writes each is behind its primary.
    Map {
        #[command(flatten)]
        servers: commands::Servers,
        /// One JSON object: `epoch`, `cluster`, `partitions`: [{`id`, `range`: [first, last],
        /// `replicas`: [{`addr`, `role`, `lag`}]}].
        #[arg(long)]
        json: bool,
    },
    /// Write JSON lines from stdin, `{"key": "...", "value": "..."}` (`key_b64`/`value_b64`
    /// for binary), many in flight; progress on stderr. A malformed line stops the import
    /// (exit 1) after the lines before it were written.
    Import {
        #[command(flatten)]
        servers: commands::Servers,
    },
    /// Write every live key to stdout as JSON lines (the `import` format); progress on stderr.
    Export {
        #[command(flatten)]
        servers: commands::Servers,
    },
    /// Start a local cluster: N node processes on 127.0.0.1 … 127.0.0.N (one port), their
    /// addresses and pids printed; stops them all on SIGTERM or SIGINT.
    Up(up::UpArgs),
    /// The cluster story on this machine: 3 node processes on 127.0.0.1-3, replicated writes,
    /// the node with the most primaries killed with SIGKILL under load and restarted; every
    /// acknowledged write checked.
    Demo {
        /// Instead: one node in this process and a short mixed workload against it.
        #[arg(long)]
        single_node: bool,
    },
    /// Load a cradle or memcached server and report throughput and latency percentiles.
    Bench(loadgen::BenchArgs),
    /// Judge this machine's disks (smartctl) and memory (EDAC) healthy, suspect or failing,
    /// with the counters that decided it; or saved smartctl JSON with --smartctl-json.
    Health(health::HealthArgs),
    /// Print a client key line (`ID NAME ROLE SECRET`, a fresh 32-byte secret) for a node's
    /// --auth-keys file; the client gets the same line in its own --key-file.
    Keygen {
        /// The key's id (unique in the node's file).
        #[arg(long)]
        id: u32,
        /// Who holds it (one word).
        #[arg(long)]
        name: String,
        /// read, write or admin.
        #[arg(long)]
        role: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("cradle: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Node { config, flags } => {
            let file = match &config {
                Some(path) => config::FileConfig::load(path),
                None => Ok(config::FileConfig::default()),
            };
            file.and_then(|file| file.resolve(flags)).and_then(|options| commands::node(&options))
        }
        Command::Put { servers, key, value, ttl } => commands::put(&servers, &key, &value, ttl),
        Command::Incr { servers, key, by, floor, ttl } => {
            commands::incr(&servers, &key, by, floor, ttl)
        }
        Command::Get { servers, key } => commands::get(&servers, &key),
        Command::Del { servers, key } => commands::del(&servers, &key),
        Command::Cas { servers, key, expected, value } => {
            commands::cas(&servers, &key, expected, &value)
        }
        Command::Status { servers, json } => commands::status(&servers, json),
        Command::Map { servers, json } => commands::map(&servers, json),
        Command::Import { servers } => commands::import(&servers),
        Command::Export { servers } => commands::export(&servers),
        Command::Up(args) => up::run(&args),
        Command::Demo { single_node } => demo::run(single_node),
        Command::Bench(args) => loadgen::run(&args),
        Command::Health(args) => health::run(&args),
        Command::Keygen { id, name, role } => commands::keygen(id, &name, &role),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cradle: {message}");
            ExitCode::FAILURE
        }
    }
}
