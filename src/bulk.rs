//! `cradle import` and `cradle export`: every key as JSON lines, `{"key": "...", "value":
//! "..."}`, with `key_b64` / `value_b64` (standard base64) for bytes that are not UTF-8.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use client::{Client, Error, Request, RequestId, ValueLocation};
use proto::{Status, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// Writes in flight at once during an import.
const IN_FLIGHT_MAX: usize = 256;
/// Value bytes in flight at once during an import (big values lower the count).
const IN_FLIGHT_BYTES_MAX: usize = 32 << 20;
/// Progress lines on stderr at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Counts and rate for progress lines and the summary.
struct Progress {
    verb: &'static str,
    started: Instant,
    last: Instant,
    keys: u64,
    bytes: u64,
}

impl Progress {
    fn new(verb: &'static str) -> Progress {
        let now = Instant::now();
        Progress { verb, started: now, last: now, keys: 0, bytes: 0 }
    }

    fn add(&mut self, key: usize, value: usize) {
        self.keys += 1;
        self.bytes += (key + value) as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn rate(&self) -> f64 {
        self.keys as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn line(&self) -> String {
        format!(
            "{} {} keys, {:.1} MiB, {:.0} keys/s",
            self.verb,
            self.keys,
            self.bytes as f64 / (1 << 20) as f64,
            self.rate()
        )
    }

    fn summary(&self) -> String {
        format!("{} in {:.2} s", self.line(), self.started.elapsed().as_secs_f64())
    }
}

/// One parsed input line.
struct Record {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// `field` or `field_b64` of `object`: exactly one of them, a string.
fn bytes_field(
    object: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Vec<u8>, String> {
    let b64 = format!("{field}_b64");
    match (object.get(field), object.get(&b64)) {
        (Some(_), Some(_)) => Err(format!("both \"{field}\" and \"{b64}\"")),
        (None, None) => Err(format!("no \"{field}\" or \"{b64}\"")),
        (Some(text), None) => text
            .as_str()
            .map(|text| text.as_bytes().to_vec())
            .ok_or_else(|| format!("\"{field}\" is not a string")),
        (None, Some(encoded)) => {
            let encoded = encoded.as_str().ok_or_else(|| format!("\"{b64}\" is not a string"))?;
            BASE64.decode(encoded).map_err(|e| format!("\"{b64}\" is not base64: {e}"))
        }
    }
}

fn parse_line(line: &str) -> Result<Record, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = parsed.as_object().ok_or("not a JSON object")?;
    if let Some(other) = object
        .keys()
        .find(|name| !["key", "key_b64", "value", "value_b64"].contains(&name.as_str()))
    {
        return Err(format!("unknown field \"{other}\""));
    }
    let key = bytes_field(object, "key")?;
    let value = bytes_field(object, "value")?;
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(format!("key of {} bytes (1 to {KEY_BYTES_MAX})", key.len()));
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(format!("value of {} bytes (at most {VALUE_BYTES_MAX})", value.len()));
    }
    Ok(Record { key, value })
}

/// A write in flight: its input line, key and value size.
struct Pending {
    line: u64,
    key: Vec<u8>,
    bytes: usize,
}

/// Pipelined writes: at most `IN_FLIGHT_MAX` (and `IN_FLIGHT_BYTES_MAX`) at once, never two
/// of one key (so a later line always wins).
struct Writer<'a> {
    client: &'a mut Client,
    pending: HashMap<RequestId, Pending>,
    keys_in_flight: HashSet<Vec<u8>>,
    bytes_in_flight: usize,
    progress: Progress,
}

impl Writer<'_> {
    fn write(&mut self, line: u64, record: Record) -> Result<(), String> {
        while !self.pending.is_empty()
            && (self.pending.len() >= IN_FLIGHT_MAX
                || self.bytes_in_flight + record.value.len() > IN_FLIGHT_BYTES_MAX
                || self.keys_in_flight.contains(&record.key))
        {
            self.complete_one()?;
        }
        let bytes = record.key.len() + record.value.len();
        self.keys_in_flight.insert(record.key.clone());
        self.bytes_in_flight += bytes;
        let id = self.client.submit(Request::Put { key: record.key.clone(), value: record.value });
        self.pending.insert(id, Pending { line, key: record.key, bytes });
        Ok(())
    }

    fn complete_one(&mut self) -> Result<(), String> {
        let Some((id, result)) = self.client.wait(Duration::from_secs(60)) else {
            return Err(format!("{} writes never completed", self.pending.len()));
        };
        let pending = self.pending.remove(&id).expect("a write of this import");
        self.keys_in_flight.remove(&pending.key);
        self.bytes_in_flight -= pending.bytes;
        match result.into_version() {
            Ok(_) => {
                self.progress.add(pending.key.len(), pending.bytes - pending.key.len());
                Ok(())
            }
            Err(error) => Err(format!(
                "line {}: writing key {} failed: {error}",
                pending.line,
                shown(&pending.key)
            )),
        }
    }

    fn drain(&mut self) -> Result<(), String> {
        let mut first_error = Ok(());
        while !self.pending.is_empty() {
            if let Err(error) = self.complete_one() {
                if first_error.is_ok() {
                    first_error = Err(error);
                }
            }
        }
        first_error
    }
}

/// `cradle import`: JSON lines from `input` written with many requests in flight.
pub(crate) fn import(client: &mut Client, input: impl BufRead) -> Result<String, String> {
    let mut writer = Writer {
        client,
        pending: HashMap::new(),
        keys_in_flight: HashSet::new(),
        bytes_in_flight: 0,
        progress: Progress::new("imported"),
    };
    let mut failure = None;
    for (index, line) in input.lines().enumerate() {
        let number = index as u64 + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                failure = Some(format!("line {number}: cannot read it: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let record = match parse_line(&line) {
            Ok(record) => record,
            Err(why) => {
                failure = Some(format!("line {number}: {why}"));
                break;
            }
        };
        if let Err(error) = writer.write(number, record) {
            failure = Some(error);
            break;
        }
    }
    // Every write already sent completes (and counts) before the verdict.
    let drained = writer.drain();
    if let Some(why) = failure.or(drained.err()) {
        return Err(format!("{why}; imported {} keys before it", writer.progress.keys));
    }
    Ok(writer.progress.summary())
}

/// One output line: `key`/`value` when UTF-8, else `key_b64`/`value_b64`.
fn json_line(key: &[u8], value: &[u8]) -> String {
    let mut object = serde_json::Map::new();
    for (field, bytes) in [("key", key), ("value", value)] {
        match std::str::from_utf8(bytes) {
            Ok(text) => object.insert(field.to_string(), text.into()),
            Err(_) => object.insert(format!("{field}_b64"), BASE64.encode(bytes).into()),
        };
    }
    serde_json::Value::Object(object).to_string()
}

/// `cradle export`: every live key of every partition of the map, as JSON lines on `out`.
pub(crate) fn export(client: &mut Client, out: &mut impl Write) -> Result<String, String> {
    let map = client.known_map().cloned().ok_or("the node sent no partition map")?;
    let mut partitions: Vec<u32> = map.entries.iter().map(|entry| entry.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let mut progress = Progress::new("exported");
    let mut skipped = 0u64;
    let failed = |e: Error| e.to_string();
    let write_failed = |e: std::io::Error| format!("cannot write the output: {e}");
    for &partition in &partitions {
        let mut after: Vec<u8> = Vec::new();
        loop {
            let (keys, more) = client
                .scan(partition, &after)
                .map_err(|e| format!("listing partition {partition}: {e}"))?;
            // References, not values: a big value is fetched alone, chunk by checked chunk.
            let locations = client.get_references(&keys).map_err(failed)?;
            for (key, location) in keys.iter().zip(locations) {
                let value = match location {
                    None => None,
                    Some(ValueLocation::Inline(value)) => Some(value.bytes),
                    Some(ValueLocation::Blob { reference, server, .. }) => {
                        match client.fetch_blob(server, &reference) {
                            Ok(bytes) => Some(bytes),
                            // Overwritten or deleted meanwhile: its chunks went away.
                            Err(Error::Status(Status::NotFound)) => {
                                client.get(key).map_err(failed)?.map(|value| value.bytes)
                            }
                            Err(error) => return Err(failed(error)),
                        }
                    }
                };
                let Some(value) = value else {
                    skipped += 1;
                    continue;
                };
                writeln!(out, "{}", json_line(key, &value)).map_err(write_failed)?;
                progress.add(key.len(), value.len());
            }
            match keys.last() {
                Some(last) if more => after.clone_from(last),
                _ => break,
            }
        }
    }
    out.flush().map_err(write_failed)?;
    Ok(format!(
        "{} from {} partitions; {skipped} keys skipped (deleted during the export)",
        progress.summary(),
        partitions.len()
    ))
}

fn shown(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("(base64) {}", BASE64.encode(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_text_and_base64_and_refuse_the_rest() {
        let r = parse_line(r#"{"key": "k", "value": "v"}"#).unwrap();
        assert_eq!((r.key, r.value), (b"k".to_vec(), b"v".to_vec()));
        let r = parse_line(r#"{"key_b64": "AP8=", "value_b64": ""}"#).unwrap();
        assert_eq!((r.key, r.value), (vec![0, 255], vec![]));
        for (line, why) in [
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"key": "k"}"#, "no \"value\""),
            (r#"{"key": "k", "value": 1}"#, "not a string"),
            (r#"{"key": "k", "value": "v", "value_b64": ""}"#, "both"),
            (r#"{"key": "k", "value_b64": "!!"}"#, "not base64"),
            (r#"{"key": "", "value": "v"}"#, "key of 0 bytes"),
            (r#"{"key": "k", "value": "v", "ttl": 3}"#, "unknown field"),
        ] {
            let error = parse_line(line).err().unwrap_or_else(|| panic!("{line} was accepted"));
            assert!(error.contains(why), "{line}: {error}");
        }
    }

    #[test]
    fn output_lines_use_base64_only_for_non_utf8() {
        assert_eq!(json_line(b"k", b"v\n"), r#"{"key":"k","value":"v\n"}"#);
        assert_eq!(json_line(&[0xff], b"v"), r#"{"key_b64":"/w==","value":"v"}"#);
        let record = parse_line(&json_line(&[1, 0xfe], &[0xc3])).unwrap();
        assert_eq!((record.key, record.value), (vec![1, 0xfe], vec![0xc3]));
    }
}
