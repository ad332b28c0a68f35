//! The door on real sockets: every command with memcached's exact replies, commands split
//! across reads and pipelined, bad input, hand-over between cores, UDP framing and the
//! amplification rule.

mod support;

use memcache::DoorConfig;
use std::time::Duration;
use support::{Client, Node, Udp};

fn store(
    c: &mut Client,
    command: &str,
    key: &str,
    flags: u32,
    exptime: i64,
    value: &str,
) -> String {
    c.ask(&format!("{command} {key} {flags} {exptime} {}\r\n{value}\r\n", value.len()))
}

#[test]
fn every_command_answers_as_memcached_does() {
    let node = Node::start(1, DoorConfig { flush_all: true, ..DoorConfig::default() });
    let mut c = node.tcp();
    assert_eq!(store(&mut c, "set", "k", 42, 0, "hello"), "STORED\r\n");
    assert_eq!(c.get("k"), Some((42, b"hello".to_vec())));
    assert_eq!(store(&mut c, "add", "k", 0, 0, "x"), "NOT_STORED\r\n");
    assert_eq!(store(&mut c, "add", "new", 1, 0, "x"), "STORED\r\n");
    assert_eq!(store(&mut c, "replace", "absent", 0, 0, "x"), "NOT_STORED\r\n");
    assert_eq!(store(&mut c, "replace", "new", 2, 0, "y"), "STORED\r\n");
    assert_eq!(c.get("new"), Some((2, b"y".to_vec())));
    assert_eq!(store(&mut c, "append", "k", 9, 0, "!"), "STORED\r\n");
    assert_eq!(store(&mut c, "prepend", "k", 9, 0, ">"), "STORED\r\n");
    assert_eq!(c.get("k"), Some((42, b">hello!".to_vec())), "append keeps the flags");
    assert_eq!(store(&mut c, "append", "absent", 0, 0, "x"), "NOT_STORED\r\n");

    // gets: a CAS token; cas with it stores once, then EXISTS; an absent key NOT_FOUND.
    c.send(b"gets k\r\n");
    let line = c.line();
    let token: u64 = line.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(line, format!("VALUE k 42 7 {token}\r\n"));
    assert_eq!(c.bytes(9), b">hello!\r\n");
    assert_eq!(c.line(), "END\r\n");
    assert_eq!(c.ask(&format!("cas k 1 0 2 {token}\r\nv2\r\n")), "STORED\r\n");
    assert_eq!(c.ask(&format!("cas k 1 0 2 {token}\r\nv3\r\n")), "EXISTS\r\n");
    assert_eq!(c.ask("cas absent 0 0 1 5\r\nx\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.ask("cas k 0 0 1 0\r\nx\r\n"), "EXISTS\r\n");

    // incr/decr: wraps at 2^64, stops at 0, refuses text.
    assert_eq!(store(&mut c, "set", "n", 0, 0, "18446744073709551614"), "STORED\r\n");
    assert_eq!(c.ask("incr n 3\r\n"), "1\r\n");
    assert_eq!(c.ask("decr n 5\r\n"), "0\r\n");
    assert_eq!(c.ask("incr n 10\r\n"), "10\r\n");
    assert_eq!(
        c.ask("incr k 1\r\n"),
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );
    assert_eq!(c.ask("incr absent 1\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.ask("incr n x\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");

    // touch, gat, gats.
    assert_eq!(c.ask("touch k 100\r\n"), "TOUCHED\r\n");
    assert_eq!(c.ask("touch absent 100\r\n"), "NOT_FOUND\r\n");
    c.send(b"gat 0 k absent new\r\n");
    assert_eq!(
        c.until_end(),
        ["VALUE k 1 2\r\n", "v2\r\n", "VALUE new 2 1\r\n", "y\r\n", "END\r\n"]
    );
    c.send(b"gats 0 new\r\n");
    assert!(c.line().starts_with("VALUE new 2 1 "));
    c.until_end();

    // Multi-get in order, misses left out.
    c.send(b"get new nope k\r\n");
    assert_eq!(
        c.until_end(),
        ["VALUE new 2 1\r\n", "y\r\n", "VALUE k 1 2\r\n", "v2\r\n", "END\r\n"]
    );

    assert_eq!(c.ask("delete k\r\n"), "DELETED\r\n");
    assert_eq!(c.ask("delete k\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.ask("delete k 0\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.ask("delete k 10\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert!(c.ask("version\r\n").starts_with("VERSION 1.6.0"));
    assert_eq!(c.ask("verbosity 1\r\n"), "OK\r\n");

    // noreply: nothing comes back; the next command's reply is the next line.
    c.send(b"set q 0 0 1 noreply\r\nq\r\ndelete new noreply\r\nincr n 1 noreply\r\n");
    assert_eq!(c.get("q"), Some((0, b"q".to_vec())));
    assert_eq!(c.get("new"), None);
    assert_eq!(c.get("n"), Some((0, b"11".to_vec())));

    assert_eq!(c.stat("curr_items"), 2);
    assert!(c.stat("get_hits") >= 5);
    assert!(c.stat("cmd_set") >= 10);
    assert_eq!(c.stat("curr_connections"), 1);
    assert_eq!(c.ask("flush_all\r\n"), "OK\r\n");
    assert_eq!(c.get("q"), None);
    assert_eq!(c.stat("curr_items"), 0);

    c.send(b"quit\r\n");
    assert_eq!(c.line(), "", "quit closes the connection");
}

#[test]
fn flush_all_is_refused_unless_enabled() {
    let node = Node::start(1, DoorConfig::default());
    let mut c = node.tcp();
    assert_eq!(store(&mut c, "set", "k", 0, 0, "v"), "STORED\r\n");
    assert_eq!(c.ask("flush_all\r\n"), "CLIENT_ERROR flush_all not allowed\r\n");
    assert_eq!(c.get("k"), Some((0, b"v".to_vec())));
}

#[test]
fn exptime_relative_absolute_and_negative() {
    let node = Node::start(1, DoorConfig::default());
    let mut c = node.tcp();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(store(&mut c, "set", "short", 0, 1, "v"), "STORED\r\n");
    assert_eq!(store(&mut c, "set", "gone", 0, -1, "v"), "STORED\r\n");
    assert_eq!(store(&mut c, "set", "past", 0, (now - 10) as i64, "v"), "STORED\r\n");
    assert_eq!(store(&mut c, "set", "future", 0, (now + 3600) as i64, "v"), "STORED\r\n");
    assert_eq!(store(&mut c, "set", "touched", 0, 1, "v"), "STORED\r\n");
    assert_eq!(c.ask("touch touched 0\r\n"), "TOUCHED\r\n");
    assert_eq!(c.get("gone"), None, "negative exptime: expired at once");
    assert_eq!(c.get("past"), None, "an absolute time in the past");
    assert!(c.get("short").is_some());
    assert_eq!(store(&mut c, "add", "gone", 0, 0, "again"), "STORED\r\n", "expired = absent");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(c.get("short"), None, "expired after its second");
    assert!(c.get("future").is_some());
    assert!(c.get("touched").is_some(), "touch 0: never expires");
    assert_eq!(c.ask("touch short 10\r\n"), "NOT_FOUND\r\n");
}

#[test]
fn commands_split_across_reads_and_pipelined_get_every_reply_in_order() {
    let node = Node::start(2, DoorConfig::default());
    let mut c = node.tcp();
    let stream = b"set a 1 0 3\r\nabc\r\nget a\r\nbogus\r\nset b 2 0 2\r\nxy\r\nget a b\r\n";
    // One byte per write, each its own segment (no delay).
    for &byte in stream.iter() {
        c.send(&[byte]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(c.line(), "STORED\r\n");
    assert_eq!(c.until_end(), ["VALUE a 1 3\r\n", "abc\r\n", "END\r\n"]);
    assert_eq!(c.line(), "ERROR\r\n");
    assert_eq!(c.line(), "STORED\r\n");
    assert_eq!(
        c.until_end(),
        ["VALUE a 1 3\r\n", "abc\r\n", "VALUE b 2 2\r\n", "xy\r\n", "END\r\n"]
    );
    // 1,000 commands in one write: 1,000 replies in order.
    let mut batch = String::new();
    for i in 0..500 {
        batch.push_str(&format!(
            "set key-{i} {i} 0 {}\r\n{i}\r\nget key-{i}\r\n",
            i.to_string().len()
        ));
    }
    c.send(batch.as_bytes());
    for i in 0..500 {
        assert_eq!(c.line(), "STORED\r\n");
        let value = i.to_string();
        assert_eq!(
            c.until_end(),
            [
                format!("VALUE key-{i} {i} {}\r\n", value.len()),
                format!("{value}\r\n"),
                "END\r\n".into()
            ]
        );
    }
}

#[test]
fn keys_owned_by_another_core_are_handed_over_and_answered_in_order() {
    let node = Node::start(2, DoorConfig::default());
    let mut c = node.tcp();
    let keys: Vec<String> = (0..64).map(|i| format!("spread-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(store(&mut c, "set", key, i as u32, 0, &format!("v{i}")), "STORED\r\n");
    }
    let mut line = String::from("get");
    for key in &keys {
        line.push(' ');
        line.push_str(key);
    }
    c.send(format!("{line}\r\n").as_bytes());
    let lines = c.until_end();
    assert_eq!(lines.len(), 2 * keys.len() + 1);
    for (i, key) in keys.iter().enumerate() {
        let value = format!("v{i}");
        assert_eq!(lines[2 * i], format!("VALUE {key} {i} {}\r\n", value.len()));
        assert_eq!(lines[2 * i + 1], format!("{value}\r\n"));
    }
    // Both cores served keys of this one connection (8 partitions over 2 cores).
    assert!(c.stat("handed_over") > 0, "no key was handed over");
    assert!(c.stat("handed_back") > 0);
    // Incr/append on a handed-over key are atomic on its owner.
    for key in &keys[..8] {
        assert_eq!(store(&mut c, "set", key, 0, 0, "0"), "STORED\r\n");
        assert_eq!(c.ask(&format!("incr {key} 7\r\n")), "7\r\n");
    }
}

#[test]
fn bad_input_gets_the_right_error_stores_nothing_and_the_connection_lives() {
    let config = DoorConfig { item_bytes_max: 1024, ..DoorConfig::default() };
    let node = Node::start(2, config);
    let mut c = node.tcp();
    let long_key = "k".repeat(251);
    assert_eq!(c.ask(&format!("get {long_key}\r\n")), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(
        c.ask(&format!("set {long_key} 0 0 1\r\nx\r\n")),
        "CLIENT_ERROR bad command line format\r\n"
    );
    // The data block of that set is then read as a command.
    assert_eq!(c.line(), "ERROR\r\n");
    // Too large: refused, its data swallowed (not read as commands), nothing stored.
    let big = "v".repeat(1025);
    assert_eq!(
        c.ask(&format!("set big 0 0 1025\r\n{big}\r\n")),
        "SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(c.get("big"), None);
    // A data block longer than announced: bad data chunk, nothing stored.
    assert_eq!(c.ask("set chunk 0 0 2\r\nabc\r\n"), "CLIENT_ERROR bad data chunk\r\n");
    // As memcached: the block's announced length and 2 bytes are taken; the "\n" left over
    // is an empty command.
    assert_eq!(c.line(), "ERROR\r\n");
    assert_eq!(c.get("chunk"), None);
    assert_eq!(c.ask("set k 0 zero 1\r\nx\r\n"), "CLIENT_ERROR bad command line format\r\n");
    assert_eq!(c.line(), "ERROR\r\n");
    assert_eq!(c.ask("\r\n"), "ERROR\r\n");
    assert_eq!(
        c.ask("flush_all 5\r\n"),
        "CLIENT_ERROR flush_all with a delay is not supported\r\n"
    );
    // A line with no end: refused once, swallowed to its newline.
    c.send(&vec![b'x'; 70 * 1024]);
    c.send(b"\r\n");
    assert_eq!(c.line(), "CLIENT_ERROR line too long\r\n");
    assert_eq!(c.ask("version\r\n").split(' ').next(), Some("VERSION"));
    assert_eq!(c.stat("curr_items"), 0);
    // A binary-protocol client is told and disconnected; the door goes on.
    let mut binary = node.tcp();
    binary.send(&[
        0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'k',
    ]);
    assert_eq!(binary.line(), "SERVER_ERROR the binary protocol is not served\r\n");
    assert_eq!(binary.line(), "", "closed");
    assert!(c.ask("version\r\n").starts_with("VERSION"));
}

#[test]
fn a_hundred_thousand_random_lines_leave_the_node_serving_and_store_nothing() {
    let node = Node::start(2, DoorConfig { item_bytes_max: 4096, ..DoorConfig::default() });
    let mut rng = testkit::Rng::from_seed(0x6d63);
    let words: [&[u8]; 12] = [
        b"get",
        b"set",
        b"cas",
        b"incr",
        b"touch",
        b"gat",
        b"delete",
        b"stats",
        b"x",
        b"-1",
        b"99999999999999999999999",
        b"\x00\xff",
    ];
    let mut c = node.tcp();
    let mut sent = Vec::new();
    for _ in 0..100_000 {
        let tokens = rng.below(6);
        for t in 0..tokens {
            if t > 0 {
                sent.push(b' ');
            }
            if rng.below(3) == 0 {
                let len = rng.below(12) as usize;
                sent.extend((0..len).map(|_| rng.below(256) as u8).filter(|&b| b != b'\n'));
            } else {
                sent.extend_from_slice(words[rng.below(words.len() as u64) as usize]);
            }
        }
        sent.extend_from_slice(b"\r\n");
        if sent.len() > 64 * 1024 {
            c.send(&sent);
            sent.clear();
        }
    }
    c.send(&sent);
    // Whatever the lines did, the connection still serves in order: a marker comes back.
    c.send(b"set marker 0 0 2\r\nok\r\n");
    let mut seen = 0;
    loop {
        let line = c.line();
        assert!(!line.is_empty(), "the connection closed");
        seen += 1;
        if line == "STORED\r\n" && c.get("marker").is_some() {
            break;
        }
    }
    assert!(seen > 1000, "random lines were answered: {seen}");
    assert!(node.alive());
    // Random lines made no key but the marker (a get/touch/delete of a random key finds none).
    assert_eq!(Client::connect(node.door).stat("curr_items"), 1);
}

#[test]
fn udp_frames_requests_splits_replies_and_never_amplifies_for_untrusted_senders() {
    let trusting = Node::start(2, DoorConfig::default());
    let mut tcp = trusting.tcp();
    let big = "b".repeat(5000);
    assert_eq!(store(&mut tcp, "set", "big", 3, 0, &big), "STORED\r\n");
    assert_eq!(store(&mut tcp, "set", "small", 4, 0, "tiny"), "STORED\r\n");
    let mut udp = Udp::new(trusting.door);
    let (reply, _) = udp.ask(b"get small\r\n");
    assert_eq!(reply, b"VALUE small 4 4\r\ntiny\r\nEND\r\n");
    // A loopback sender is allowed: the 5,000-byte value comes in 4 datagrams.
    let (reply, wire) = udp.ask(b"get big\r\n");
    assert_eq!(reply, format!("VALUE big 3 5000\r\n{big}\r\nEND\r\n").into_bytes());
    assert_eq!(wire, reply.len() + 8 * 4);
    let (reply, _) = udp.ask(b"set u 0 0 2\r\nhi\r\nget u\r\n");
    assert_eq!(reply, b"STORED\r\nVALUE u 0 2\r\nhi\r\nEND\r\n");
    let (reply, _) = udp.ask(b"set u 0 0 5\r\nhi\r\n");
    assert_eq!(reply, b"CLIENT_ERROR bad data chunk\r\n");
    drop(tcp);

    // The spoofed-source case: nobody is trusted. A 17-byte request for a 5,000-byte value
    // must not make the door send more than 51 bytes to whoever the source claims to be.
    let wary = Node::start(1, DoorConfig { udp_allow: vec![], ..DoorConfig::default() });
    let mut tcp = wary.tcp();
    assert_eq!(store(&mut tcp, "set", "big", 3, 0, &big), "STORED\r\n");
    assert_eq!(store(&mut tcp, "set", "s", 0, 0, "v"), "STORED\r\n");
    let mut victim = Udp::new(wary.door);
    let request = b"get big\r\n";
    let hits = tcp.stat("get_hits");
    let (reply, wire) = victim.ask(request);
    assert_eq!(reply, b"SERVER_ERROR use TCP\r\n");
    assert_eq!(tcp.stat("get_hits"), hits, "refused before the value was read");
    assert!(
        wire <= 3 * (request.len() + 8),
        "{wire} bytes for a {}-byte request",
        request.len() + 8
    );
    // Nothing more arrives.
    victim.socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(victim.socket.recv(&mut [0u8; 2048]).is_err(), "more datagrams came");
    victim.socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A reply within 3x is sent as usual; stats (large) is refused.
    let (reply, _) = victim.ask(b"get s\r\n");
    assert_eq!(reply, b"VALUE s 0 1\r\nv\r\nEND\r\n");
    let (reply, _) = victim.ask(b"stats\r\n");
    assert_eq!(reply, b"SERVER_ERROR use TCP\r\n");
    assert_eq!(tcp.stat("udp_refused"), 2);
}

#[test]
fn a_port_another_process_listens_on_is_refused_not_shared() {
    let node = Node::start(1, DoorConfig::default());
    let stats = std::sync::Arc::new(control::NodeStats::new(1));
    let error = memcache::doors(node.door, 1, &DoorConfig::default(), stats).unwrap_err();
    assert!(error.to_string().contains("cannot listen on"), "{error}");
}

#[test]
fn a_client_that_closes_its_side_still_gets_its_replies() {
    let node = Node::start(2, DoorConfig::default());
    let mut c = node.tcp();
    c.send(b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nget a b\r\n");
    c.shutdown_write();
    let mut all = String::new();
    loop {
        let line = c.line();
        if line.is_empty() {
            break;
        }
        all.push_str(&line);
    }
    assert_eq!(all, "STORED\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n");
}

#[test]
fn a_pipeline_whose_replies_back_up_is_served_to_the_end() {
    let node = Node::start(1, DoorConfig::default());
    let mut c = node.tcp();
    let value = "v".repeat(100_000);
    assert_eq!(c.ask(&format!("set big 0 0 {}\r\n{value}\r\n", value.len())), "STORED\r\n");
    // 100 gets of 100 KB: 10 MB of replies, more than the door queues per connection,
    // sent before reading any: the door must pause and resume, not stall.
    c.send("get big\r\n".repeat(100).as_bytes());
    for _ in 0..100 {
        assert_eq!(c.line(), "VALUE big 0 100000\r\n");
        assert_eq!(c.bytes(100_002).len(), 100_002);
        assert_eq!(c.line(), "END\r\n");
    }
}

#[test]
fn under_the_flushed_class_replies_wait_for_the_group_commit_and_keep_their_order() {
    let node = Node::start_with(2, DoorConfig::default(), control::Durability::Flushed);
    let mut c = node.tcp();
    // Writes held for the commit, on both cores, interleaved with reads that are not: the
    // replies still come in command order.
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&format!("set k{i} 0 0 1\r\n{}\r\nget k{i}\r\nincr n{i} 1\r\n", i % 10));
    }
    c.send(batch.as_bytes());
    for i in 0..200 {
        assert_eq!(c.line(), "STORED\r\n", "set k{i}");
        assert_eq!(
            c.until_end(),
            [format!("VALUE k{i} 0 1\r\n"), format!("{}\r\n", i % 10), "END\r\n".into()]
        );
        assert_eq!(c.line(), "NOT_FOUND\r\n");
    }
    assert_eq!(c.stat("held_for_commit"), 200, "every STORED waited for its flush");
}

#[test]
fn a_get_whose_reply_outgrows_its_memory_is_cut_with_memcacheds_error() {
    let node = Node::start(1, DoorConfig { item_bytes_max: 1 << 20, ..DoorConfig::default() });
    let mut c = node.tcp();
    let value = "m".repeat(1 << 20);
    assert_eq!(c.ask(&format!("set m 0 0 {}\r\n{value}\r\n", value.len())), "STORED\r\n");
    // 100 times the same 1 MiB value: 100 MiB, over the 64 MiB a get may hold.
    c.send(format!("get{}\r\n", " m".repeat(100)).as_bytes());
    let mut values = 0;
    loop {
        let line = c.line();
        if line == "SERVER_ERROR out of memory writing get response\r\n" {
            break;
        }
        assert_eq!(line, "VALUE m 0 1048576\r\n");
        c.bytes((1 << 20) + 2);
        values += 1;
    }
    assert!((60..=70).contains(&values), "{values} values before the cut");
    assert!(c.ask("version\r\n").starts_with("VERSION"), "the connection goes on");
}
