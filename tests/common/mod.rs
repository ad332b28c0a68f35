//! Helpers for whole-binary tests: start `cradle node` as a real process and drive the CLI.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub(crate) fn cradle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cradle"))
}

/// A running `cradle node`; stopped with SIGTERM (by its PID) when dropped.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) data_dir: tempfile::TempDir,
    pub(crate) stdout_lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts a node on an ephemeral port of 127.0.0.1 and waits for its ready line.
    pub(crate) fn start(cores: u32, partitions: u32, extra: &[&str]) -> NodeProcess {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut command = cradle();
        command
            .args(["node", "--listen", "127.0.0.1:0", "--no-pin"])
            .args([
                "--cores",
                &cores.to_string(),
                "--partitions",
                &partitions.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        NodeProcess::spawn(command, data_dir)
    }

    /// Spawns `command` (a node invocation) and waits for `cradle ready`.
    pub(crate) fn spawn(mut command: Command, data_dir: tempfile::TempDir) -> NodeProcess {
        let mut child = command.spawn().expect("spawn cradle node");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("cradle node printed nothing");
        assert!(
            ready.starts_with("cradle ready"),
            "unexpected first line: {ready}"
        );
        NodeProcess {
            child,
            addr: parse_ready_addr(&ready),
            data_dir,
            stdout_lines: rx,
        }
    }

    pub(crate) fn server(&self) -> String {
        self.addr.to_string()
    }

    /// SIGTERM, then wait up to `limit` for a clean exit; returns the exit status.
    pub(crate) fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cradle node ignored SIGTERM for {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal to one process we started, by PID.
pub(crate) fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// "cradle ready: 1 core(s) on 127.0.0.1:41234..41234, ..." -> 127.0.0.1:41234
fn parse_ready_addr(line: &str) -> SocketAddr {
    let after = line.split(" on ").nth(1).expect("address in ready line");
    let addr = after.split("..").next().expect("address");
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}

/// Runs the CLI with `stdin` bytes; returns its output.
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = cradle()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cradle");
    let mut input = child.stdin.take().expect("stdin");
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let output = child.wait_with_output().expect("cradle output");
    writer.join().expect("stdin writer");
    output
}

/// Pseudo-random bytes (deterministic per seed).
pub(crate) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn data_dir(node: &NodeProcess) -> PathBuf {
    node.data_dir.path().to_path_buf()
}
