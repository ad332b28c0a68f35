//! `cradle import` / `cradle export` against a real node process, and big values by reference
//! (REF_ONLY GET, CHUNK) through the client library.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use client::{Client, ClientConfig, ValueLocation};
use common::{bytes, cradle, run, stderr_of, NodeProcess};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// An input line: text fields when UTF-8 (alternating with base64 for variety), else base64.
fn line(key: &[u8], value: &[u8], prefer_b64: bool) -> String {
    let mut object = serde_json::Map::new();
    for (field, data) in [("key", key), ("value", value)] {
        match std::str::from_utf8(data) {
            Ok(text) if !prefer_b64 => object.insert(field.into(), text.into()),
            _ => object.insert(format!("{field}_b64"), BASE64.encode(data).into()),
        };
    }
    serde_json::Value::Object(object).to_string() + "\n"
}

/// The records of an export: each line one object with key/key_b64 and value/value_b64.
fn parse_export(stdout: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut records = BTreeMap::new();
    for text in std::str::from_utf8(stdout).expect("utf-8 output").lines() {
        let object: serde_json::Value = serde_json::from_str(text).expect("a JSON line");
        let field = |name: &str| -> Vec<u8> {
            if let Some(text) = object.get(name).and_then(|v| v.as_str()) {
                assert!(object.get(format!("{name}_b64")).is_none());
                return text.as_bytes().to_vec();
            }
            let encoded = object[format!("{name}_b64")].as_str().expect("a base64 field");
            let decoded = BASE64.decode(encoded).expect("base64");
            assert!(std::str::from_utf8(&decoded).is_err(), "base64 only for non-UTF-8: {text}");
            decoded
        };
        let previous = records.insert(field("key"), field("value"));
        assert!(previous.is_none(), "a key exported twice");
    }
    records
}

/// ~5,000 records: text, binary keys and values, a few big values (blob tier).
fn dataset() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut records = Vec::new();
    for i in 0..4_800u64 {
        let key = format!("user:{i:05}").into_bytes();
        let value = match i % 4 {
            0 => format!("{{\"name\": \"n{i}\", \"ü\": \"ñ\"}}").into_bytes(),
            1 => bytes(10 + (i as usize % 300), i),
            2 => bytes(1_000 + (i as usize % 3_000), i),
            _ => Vec::new(),
        };
        records.push((key, value));
    }
    for i in 0..200u64 {
        let mut key = bytes(1 + (i as usize % 40), 1_000 + i);
        key.push(0xff); // never UTF-8
        records.push((key, format!("binary key {i}").into_bytes()));
    }
    for (i, len) in [20_000usize, 100 << 10, 2 << 20, 300_000].into_iter().enumerate() {
        records.push((format!("big-{len}").into_bytes(), bytes(len, 77 + i as u64)));
    }
    records
}

#[test]
fn import_then_export_gives_back_exactly_the_same_keys_and_values() {
    let node = NodeProcess::start(2, 64, &[]);
    let server = node.server();
    let records = dataset();
    let mut input = String::new();
    for (i, (key, value)) in records.iter().enumerate() {
        input.push_str(&line(key, value, i % 7 == 0));
    }
    // One key twice: the later line wins.
    input.push_str(&line(b"user:00000", b"rewritten", false));
    input.push('\n'); // a blank line is skipped
    let expected: BTreeMap<Vec<u8>, Vec<u8>> =
        records.into_iter().chain([(b"user:00000".to_vec(), b"rewritten".to_vec())]).collect();
    let input_mib = input.len() as f64 / (1 << 20) as f64;

    let started = Instant::now();
    let import = run(&["import", "--server", &server], input.as_bytes());
    let import_time = started.elapsed();
    let stderr = stderr_of(&import);
    assert!(import.status.success(), "import: {stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    let count = expected.len() + 1; // the rewritten key counts twice
    assert!(
        summary.starts_with(&format!("imported {count} keys, ")) && summary.contains(" keys/s"),
        "summary: {summary}"
    );

    let started = Instant::now();
    let export = run(&["export", "--server", &server], b"");
    let export_time = started.elapsed();
    let stderr = stderr_of(&export);
    assert!(export.status.success(), "export: {stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("exported {} keys, ", expected.len()))
            && summary.contains("from 64 partitions; 0 keys skipped"),
        "summary: {summary}"
    );
    let exported = parse_export(&export.stdout);
    assert_eq!(exported.len(), expected.len());
    for (key, value) in &expected {
        match exported.get(key) {
            Some(got) => assert!(got == value, "key {key:?}: {} bytes differ", value.len()),
            None => panic!("key {key:?} missing from the export"),
        }
    }
    let keys = expected.len() as f64;
    eprintln!(
        "import: {} keys ({input_mib:.1} MiB of JSON) in {import_time:.2?}, {:.0} keys/s; \
         export in {export_time:.2?}, {:.0} keys/s",
        expected.len(),
        keys / import_time.as_secs_f64(),
        keys / export_time.as_secs_f64()
    );
}

#[test]
fn a_malformed_line_stops_the_import_after_the_lines_before_it() {
    let node = NodeProcess::start(2, 64, &[]);
    let server = node.server();
    let mut input = String::new();
    for i in 0..1_000 {
        input.push_str(&line(format!("k{i}").as_bytes(), b"v", false));
    }
    input.push_str("{\"key\": \"broken\", \"value\": \n");
    for i in 1_000..1_100 {
        input.push_str(&line(format!("k{i}").as_bytes(), b"v", false));
    }
    let import = run(&["import", "--server", &server], input.as_bytes());
    assert_eq!(import.status.code(), Some(1));
    let stderr = stderr_of(&import);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cradle: line 1001: not JSON")
            && last.ends_with("imported 1000 keys before it"),
        "stderr: {stderr}"
    );
    let export = run(&["export", "--server", &server], b"");
    assert!(export.status.success(), "{}", stderr_of(&export));
    let exported = parse_export(&export.stdout);
    let expected: BTreeMap<Vec<u8>, Vec<u8>> =
        (0..1_000).map(|i| (format!("k{i}").into_bytes(), b"v".to_vec())).collect();
    assert_eq!(exported, expected, "exactly the lines before the malformed one");

    let bad_field = run(&["import", "--server", &server], b"{\"key\": \"a\", \"value\": 3}\n");
    assert_eq!(bad_field.status.code(), Some(1));
    assert_eq!(
        stderr_of(&bad_field).trim(),
        "cradle: line 1: \"value\" is not a string; imported 0 keys before it"
    );
}

#[test]
fn progress_is_reported_once_a_second_while_importing() {
    let node = NodeProcess::start(2, 64, &[]);
    let mut child = cradle()
        .args(["import", "--server", &node.server()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cradle import");
    let mut stdin = child.stdin.take().expect("stdin");
    // Lines trickle in for about 2.5 s.
    for batch in 0..25 {
        let mut chunk = String::new();
        for i in 0..100 {
            chunk.push_str(&line(format!("p{batch}-{i}").as_bytes(), &[b'x'; 100], false));
        }
        stdin.write_all(chunk.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
    let output = child.wait_with_output().expect("import output");
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let progress: Vec<&str> =
        stderr.lines().filter(|l| l.starts_with("imported ") && !l.contains(" in ")).collect();
    assert!((1..=3).contains(&progress.len()), "progress lines: {stderr}");
    for l in &progress {
        assert!(l.contains(" keys, ") && l.contains(" MiB, ") && l.ends_with(" keys/s"), "{l}");
    }
    assert!(stderr.lines().last().unwrap().starts_with("imported 2500 keys, "), "{stderr}");
}

#[test]
fn a_big_value_is_fetched_by_reference_and_stored_once() {
    let node = NodeProcess::start(2, 64, &[]);
    let mut client = Client::connect(ClientConfig::new(vec![node.addr])).expect("connect");
    let value = bytes(4 << 20, 4);
    // One hash tag: both keys on one core, whose blob tier stores the chunks once.
    let version = client.put(b"{blob}a", &value).unwrap();
    client.put(b"{blob}b", &value).unwrap();

    let Some(ValueLocation::Blob { reference, version: got, server }) =
        client.get_reference(b"{blob}a").unwrap()
    else {
        panic!("a 4 MiB value lives in the blob tier");
    };
    assert_eq!(got, version);
    assert_eq!((reference.value_len, reference.chunk_bytes), (4 << 20, 64 << 10));
    assert_eq!(reference.hashes.len(), 64);
    let mut reassembled = Vec::new();
    for hash in &reference.hashes {
        reassembled.extend(client.fetch_chunk(server, hash).unwrap());
    }
    assert!(reassembled == value, "the chunks reassemble the value");
    assert!(client.fetch_blob(server, &reference).unwrap() == value);
    let part = client.fetch_chunk_range(server, &reference.hashes[10], 5_000, 2_000).unwrap();
    assert!(part == value[(10 << 16) + 5_000..(10 << 16) + 7_000]);

    let Some(ValueLocation::Blob { reference: other, .. }) =
        client.get_reference(b"{blob}b").unwrap()
    else {
        panic!("the second key is a blob too");
    };
    assert_eq!(other.hashes, reference.hashes, "same content, same chunks");
    client.put(b"small", b"inline").unwrap();
    let Some(ValueLocation::Inline(small)) = client.get_reference(b"small").unwrap() else {
        panic!("a small value comes back itself");
    };
    assert_eq!(small.bytes, b"inline");

    // The node refreshes its size counters every 250 ms.
    std::thread::sleep(Duration::from_millis(300));
    let status = run(&["status", "--server", &node.server(), "--json"], b"");
    assert!(status.status.success(), "{}", stderr_of(&status));
    let stats: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON status");
    let blob_bytes = stats["blob_bytes"].as_u64().expect("blob_bytes");
    assert!(
        (4 << 20..(4 << 20) + (64 << 10)).contains(&blob_bytes),
        "two keys with one 4 MiB value use 4 MiB of blobs, not 8: {blob_bytes}"
    );
}
