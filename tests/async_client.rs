//! The async client (`client` feature `tokio`) against a real `cradle node` process.

mod common;

use client::{
    AsyncClient, CasOutcome, ClientConfig, Error, IncrOutcome, Outcome, Request, RequestOptions,
};
use common::NodeProcess;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "current_thread")]
async fn async_operations_against_a_real_node() {
    let node = NodeProcess::start(2, 16, &["--durability", "memory"]);
    let client = AsyncClient::connect(ClientConfig::new(vec![node.addr])).await.expect("connect");
    assert_eq!(client.shared().known_map().map(|map| map.entries.len()), Some(16));

    let version = client.put(b"greeting", b"hello").await.unwrap();
    let value = client.get(b"greeting").await.unwrap().expect("just written");
    assert_eq!((value.bytes.as_slice(), value.version), (&b"hello"[..], version));
    assert_eq!(client.get(b"absent").await.unwrap(), None);
    let stale = client.cas(b"greeting", version + 1_000, b"x").await.unwrap();
    assert_eq!(stale, CasOutcome::Mismatch { current_version: version });
    let CasOutcome::Swapped { version: swapped } =
        client.cas(b"greeting", version, b"hi").await.unwrap()
    else {
        panic!("the expected version matched");
    };
    assert!(swapped > version);
    assert!(client.delete(b"greeting").await.unwrap());
    assert!(!client.delete(b"greeting").await.unwrap());
    // A counter with a floor, through the async wrapper and the shared client under it.
    let counted = client.incr(b"budget", 5, None, None).await.unwrap();
    assert_eq!(counted, IncrOutcome::Counted { count: 5 });
    let refused = client.shared().incr(b"budget", -6, Some(0), None).unwrap();
    assert_eq!(refused, IncrOutcome::BelowFloor { count: 5 });

    // 64 tasks at once on one thread, then one 16-key multi-get of what they wrote.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let client = client.clone();
        // `spawn`: the futures are `Send`.
        tasks.spawn(async move {
            let key = format!("user:{i}");
            client.put(key.as_bytes(), &i.to_le_bytes()).await.map(|version| (i, version))
        });
    }
    let mut written = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        written.push(joined.expect("task").expect("put"));
    }
    written.sort();
    assert_eq!(written.len(), 64);
    assert!(written.iter().enumerate().all(|(i, &(key, _))| key == i as u32));
    let keys: Vec<String> = (0..16).map(|i| format!("user:{i}")).collect();
    let values = client.get_many(&keys, RequestOptions::default()).await.unwrap();
    for (i, value) in values.into_iter().enumerate() {
        let value = value.unwrap().expect("written");
        assert_eq!(value.bytes, (i as u32).to_le_bytes());
    }

    // A deadline already passed fails unsent; so does a key too long.
    let past = RequestOptions { deadline: Some(Instant::now()) };
    let outcome = client.call(Request::Get { key: b"user:1".to_vec() }, past).await;
    assert!(matches!(outcome, Outcome::Failed(Error::DeadlineExceeded)), "{outcome:?}");
    let long = vec![b'k'; 300];
    assert!(matches!(client.get(&long).await, Err(Error::KeyTooLong { len: 300 })));
    let within = RequestOptions::within(Instant::now(), Duration::from_secs(1));
    let outcome = client.call(Request::Get { key: b"user:2".to_vec() }, within).await;
    assert_eq!(outcome.into_value().unwrap().unwrap().bytes, 2u32.to_le_bytes());
    assert_eq!(client.shared().in_flight(), 0);
}
