//! Client authentication against a real `cradle node --auth-keys` over real UDP (#16 point
//! 11): what an unsealed, wrongly keyed or tampered datagram gets back, each role's rights,
//! a replayed write, and the CLI's `--key-file`.

mod common;

use common::{run, stderr_of, NodeProcess};
use proto::auth::{parse_key_file, seal, AUTH_HEADER_BYTES};
use proto::{encode_message, HeaderFields, IncrArgs, Message, Opcode, Status, HEADER_BYTES};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A node's key file and one file per client, all made by `cradle keygen`.
struct Keys {
    dir: tempfile::TempDir,
    /// The key lines of the reader (id 1), the writer (2) and the admin (3).
    lines: Vec<String>,
    /// A key of id 2 that the node does not know (another secret).
    outsider: String,
}

impl Keys {
    fn new() -> Keys {
        let keygen = |id: &str, name: &str, role: &str| {
            let out = run(&["keygen", "--id", id, "--name", name, "--role", role], b"");
            assert!(out.status.success(), "{}", stderr_of(&out));
            String::from_utf8(out.stdout).unwrap()
        };
        let lines = vec![
            keygen("1", "reader", "read"),
            keygen("2", "writer", "write"),
            keygen("3", "ops", "admin"),
        ];
        let outsider = keygen("2", "writer", "write");
        assert_ne!(outsider, lines[1], "fresh secrets");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.keys"), format!("# cradle keys\n{}", lines.concat()))
            .unwrap();
        for (name, line) in ["reader", "writer", "admin"].iter().zip(&lines) {
            std::fs::write(dir.path().join(format!("{name}.key")), line).unwrap();
        }
        Keys { dir, lines, outsider }
    }

    fn path(&self, name: &str) -> String {
        let path: PathBuf = self.dir.path().join(name);
        path.to_str().unwrap().to_string()
    }

    fn node(&self) -> NodeProcess {
        NodeProcess::start(
            1,
            16,
            &["--durability", "memory", "--auth-keys", &self.path("node.keys")],
        )
    }
}

fn request(opcode: Opcode, tracking_id: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let header = HeaderFields {
        opcode: opcode as u8,
        client_id: 77,
        tracking_id,
        ..HeaderFields::default()
    };
    let mut buf = vec![0u8; 1472];
    let len = encode_message(&mut buf, &header, key, value).unwrap();
    buf.truncate(len);
    buf
}

fn sealed(line: &str, messages: &[u8]) -> Vec<u8> {
    let entry = &parse_key_file(line).unwrap()[0];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut out = Vec::new();
    seal(entry.id, &entry.secret, now, messages, &mut out);
    out
}

/// Sends `datagram` from a fresh socket; every datagram that comes back within 300 ms.
fn exchange(node: SocketAddr, datagram: &[u8]) -> Vec<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    socket.send_to(datagram, node).unwrap();
    let mut replies = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((len, _)) = socket.recv_from(&mut buf) {
        replies.push(buf[..len].to_vec());
    }
    replies
}

fn status_of(reply: &[u8]) -> u16 {
    Message::parse(reply).unwrap().0.header.status
}

#[test]
fn without_a_valid_mac_a_datagram_gets_one_small_error_and_nothing_is_done() {
    let keys = Keys::new();
    let node = keys.node();
    let mut plain = request(Opcode::Put, 1, b"k", &[7; 600]);
    plain.extend_from_slice(&request(Opcode::Get, 2, b"k", b""));
    let mut tampered = sealed(&keys.lines[1], &plain);
    tampered[AUTH_HEADER_BYTES + HEADER_BYTES] ^= 0x20; // the key's byte, after the MAC
    for (what, datagram) in [
        ("no MAC", plain.clone()),
        ("a key the node does not know", sealed(&keys.outsider, &plain)),
        ("one byte changed after the MAC", tampered),
    ] {
        let replies = exchange(node.addr, &datagram);
        assert_eq!(replies.len(), 1, "{what}: one reply for two requests");
        assert_eq!(replies[0].len(), HEADER_BYTES, "{what}: a bare header");
        assert_eq!(status_of(&replies[0]), Status::Unauthenticated as u16, "{what}");
    }
    let get =
        run(&["get", "--server", &node.server(), "--key-file", &keys.path("admin.key"), "k"], b"");
    assert_eq!(get.status.code(), Some(1), "nothing was written: {}", stderr_of(&get));
    assert!(stderr_of(&get).contains("not found"));
    let j =
        run(&["get", "--server", &node.server(), "--key-file", &keys.path("admin.key"), "K"], b"");
    assert!(stderr_of(&j).contains("not found"), "the tampered key was not written either");
    // The same datagram sealed with the writer's key is served: both requests answered.
    let replies = exchange(node.addr, &sealed(&keys.lines[1], &plain));
    let statuses: Vec<u16> = replies
        .iter()
        .flat_map(|d| proto::Messages::new(d).map(|m| m.unwrap().header.status))
        .collect();
    assert_eq!(statuses, [0, 0]);
    // A client without a key is told why at once.
    let out = run(&["get", "--server", &node.server(), "k"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("unauthenticated"), "{}", stderr_of(&out));
}

#[test]
fn each_role_has_its_rights_and_the_cli_takes_a_key_file() {
    let keys = Keys::new();
    let node = keys.node();
    let s = node.server();
    let cli = |key: &str, args: &[&str]| {
        let path = keys.path(key);
        let mut all = vec![args[0], "--server", &s, "--key-file", &path];
        all.extend_from_slice(&args[1..]);
        run(&all, b"")
    };
    let out = cli("writer.key", &["put", "color", "blue"]);
    assert!(out.status.success(), "a write key may PUT: {}", stderr_of(&out));
    let out = cli("reader.key", &["get", "color"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"blue"[..]),
        "a read key may GET"
    );
    let out = cli("reader.key", &["put", "color", "red"]);
    assert_eq!(out.status.code(), Some(1), "a read key may not PUT");
    assert!(stderr_of(&out).contains("forbidden"), "{}", stderr_of(&out));
    let out = cli("reader.key", &["incr", "n"]);
    assert!(stderr_of(&out).contains("forbidden"), "nor INCR: {}", stderr_of(&out));
    assert_eq!(cli("reader.key", &["get", "color"]).stdout, b"blue", "still blue");
    let out = cli("writer.key", &["export"]);
    assert_eq!(out.status.code(), Some(1), "a write key may not export");
    assert!(stderr_of(&out).contains("forbidden"), "{}", stderr_of(&out));
    let out = cli("admin.key", &["export"]);
    assert!(out.status.success(), "an admin key may: {}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"color\"") && text.contains("blue"), "{text}");
    let out = cli("admin.key", &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = run(&["put", "--server", &s, "--key-file", &keys.path("nope.key"), "a", "b"], b"");
    assert!(stderr_of(&out).contains("cannot read the key file"), "{}", stderr_of(&out));
}

#[test]
fn a_replayed_authenticated_write_is_not_applied_twice() {
    let keys = Keys::new();
    let node = keys.node();
    let args = IncrArgs { delta: 5, floor: None }.encode();
    let datagram = sealed(&keys.lines[1], &request(Opcode::Incr, 9, b"budget", &args));
    for copy in 0..3 {
        let replies = exchange(node.addr, &datagram);
        assert_eq!(replies.len(), 1, "copy {copy}");
        let (reply, _) = Message::parse(&replies[0]).unwrap();
        assert_eq!(reply.header.status, 0, "copy {copy}");
        assert_eq!(proto::decode_count(reply.value), Some(5), "copy {copy}: the first count");
    }
    let path = keys.path("reader.key");
    let out = run(&["get", "--server", &node.server(), "--key-file", &path, "budget"], b"");
    assert_eq!(out.stdout, b"5", "counted once: {}", stderr_of(&out));
}

#[test]
fn the_memcached_door_is_refused_with_auth_unless_allowed_and_bad_key_files_are_named() {
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let base = ["node", "--listen", "127.0.0.1:0", "--no-pin", "--data-dir"];
    let node_keys = keys.path("node.keys");
    let mut args: Vec<&str> = base.to_vec();
    args.extend([data.path().to_str().unwrap(), "--auth-keys", &node_keys, "--memcache-port", "0"]);
    let out = run(&args, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("memcached door cannot authenticate"), "{}", stderr_of(&out));
    std::fs::write(keys.path("bad.keys"), "1 x superuser 00\n").unwrap();
    let bad = keys.path("bad.keys");
    let mut args: Vec<&str> = base.to_vec();
    args.extend([data.path().to_str().unwrap(), "--auth-keys", &bad]);
    let out = run(&args, b"");
    assert!(stderr_of(&out).contains("line 1: role \"superuser\""), "{}", stderr_of(&out));
}

#[test]
fn the_library_clients_seal_with_a_configured_key() {
    let keys = Keys::new();
    let node = keys.node();
    let config = |key: &str| {
        let mut config = client::ClientConfig::new(vec![node.addr]);
        config.key = Some(client::ClientKey::load(std::path::Path::new(&keys.path(key))).unwrap());
        config
    };
    let shared = client::SharedClient::connect(config("writer.key")).unwrap();
    assert!(shared.put(b"shared", b"sealed").unwrap() > 0);
    let mut reader = client::Client::connect(config("reader.key")).unwrap();
    assert_eq!(reader.get(b"shared").unwrap().unwrap().bytes, b"sealed");
    let refused = reader.put(b"shared", b"no");
    assert!(matches!(refused, Err(client::Error::Status(Status::Forbidden))), "{refused:?}");
    // Without a key the library is told at connect.
    let plain = client::Client::connect(client::ClientConfig::new(vec![node.addr]));
    assert!(matches!(plain, Err(client::Error::Status(Status::Unauthenticated))), "{plain:?}");
}
