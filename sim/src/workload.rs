//! What one simulated client does: a seeded mix of GET, PUT, CAS and DELETE on a few shared
//! keys, every written value unique (client and sequence number), CAS on the last version it
//! saw.

use testkit::linearizability::Call;
use testkit::Rng;

pub(crate) struct Workload {
    client: u64,
    keys: usize,
    rng: Rng,
    issued: usize,
    operations: usize,
    /// The last version this client saw of each key (what its CAS expects).
    seen: Vec<u64>,
    /// Reads asked for after the mix (`read_all`).
    final_reads: Vec<Vec<u8>>,
}

impl Workload {
    pub(crate) fn new(client: u64, keys: usize, operations: usize, seed: u64) -> Workload {
        let rng = Rng::from_seed(seed);
        let seen = vec![0; keys];
        Workload { client, keys, rng, issued: 0, operations, seen, final_reads: Vec::new() }
    }

    pub(crate) fn finished(&self) -> bool {
        self.issued >= self.operations && self.final_reads.is_empty()
    }

    /// After its mix, the client reads every key once more.
    pub(crate) fn read_all(&mut self) {
        self.final_reads = (0..self.keys).rev().map(key_name).collect();
    }

    /// The next key and call, or none once the client is done.
    pub(crate) fn next(&mut self) -> Option<(Vec<u8>, Call)> {
        if self.issued >= self.operations {
            return self.final_reads.pop().map(|key| (key, Call::Get));
        }
        self.issued += 1;
        let key = self.rng.below(self.keys as u64) as usize;
        let value = format!("c{}-{}", self.client, self.issued).into_bytes();
        let call = match self.rng.below(10) {
            0..=3 => Call::Get,
            4..=5 => Call::Put { value },
            6..=8 => Call::Cas { expected_version: self.seen[key], value },
            _ => Call::Delete,
        };
        Some((key_name(key), call))
    }

    /// What an answer said the key's version is (keys are `key-N`).
    pub(crate) fn saw(&mut self, key: &[u8], version: u64) {
        if let Some(i) = std::str::from_utf8(&key[4..]).ok().and_then(|k| k.parse::<usize>().ok()) {
            self.seen[i] = version;
        }
    }
}

fn key_name(key: usize) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}
