//! `examples/bidder.rs` against a real node: per bid a 16-key pipelined multi-get, a budget
//! decrement that never goes below 0 (INCR with a floor, and the CAS loop it replaced), an
//! impression with a TTL.

mod common;

#[path = "../examples/bidder.rs"]
#[allow(dead_code, unreachable_pub)]
mod bidder;

use common::NodeProcess;

#[test]
fn the_bidder_spends_each_budget_exactly_and_never_below_zero() {
    for counter in [bidder::Counter::Incr, bidder::Counter::Cas] {
        let node = NodeProcess::start(2, 16, &["--durability", "memory"]);
        // Budgets that run out mid-run: 4 bidders race for the last units of 2 campaigns.
        let args = bidder::Args {
            server: node.addr,
            bids: 2_000,
            bidders: 4,
            campaigns: 2,
            budget: 600,
            counter,
            impression_ttl: 1,
        };
        let summary = bidder::run(&args).unwrap_or_else(|failure| panic!("{failure}"));
        eprintln!("{summary}");
        assert!(summary.contains("won 1200, refused (budget spent) 800"), "{summary}");
        assert!(summary.contains("budgets left 0, spent 1200"), "{summary}");
        if counter == bidder::Counter::Incr {
            assert!(summary.contains("CAS retries 0 "), "{summary}");
        }
        // The impressions were written with a TTL of 1 s: there now, gone once it passed.
        let mut client =
            client::Client::connect(client::ClientConfig::new(vec![node.addr])).expect("connect");
        let keys: Vec<String> = (0..500).map(|n| format!("imp:0:{n}")).collect();
        let present = |client: &mut client::Client| {
            client.get_many(&keys).expect("get_many").iter().filter(|v| v.is_some()).count()
        };
        let before = present(&mut client);
        assert!(before > 0, "bidder 0 won bids");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(present(&mut client), 0, "all {before} impressions expired");
    }
}
