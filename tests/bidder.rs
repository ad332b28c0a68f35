//! `examples/bidder.rs` against a real node: per bid a 16-key pipelined multi-get, a budget
//! decrement that never goes below 0 (a CAS loop until the server has INCR), an impression.

mod common;

#[path = "../examples/bidder.rs"]
#[allow(dead_code, unreachable_pub)]
mod bidder;

use common::NodeProcess;

#[test]
fn the_bidder_spends_each_budget_exactly_and_never_below_zero() {
    let node = NodeProcess::start(2, 16, &["--durability", "memory"]);
    // Budgets that run out mid-run: 4 bidders race for the last units of 2 campaigns.
    let args =
        bidder::Args { server: node.addr, bids: 2_000, bidders: 4, campaigns: 2, budget: 600 };
    let summary = bidder::run(&args).unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("{summary}");
    assert!(summary.contains("won 1200, refused (budget spent) 800"), "{summary}");
    assert!(summary.contains("budgets left 0, spent 1200"), "{summary}");
}
