//! Any bytes as `smartctl --json -a` output: parsing gives a reading or an error naming the
//! source, never a panic, and whatever parsed can be judged twice (a trend against itself)
//! and reported.
#![no_main]

use health::{parse_smartctl, Monitor, OwnSignals, Readings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match parse_smartctl(bytes, "fuzz.json") {
        Ok(device) => {
            let readings = Readings { devices: vec![device], ..Readings::default() };
            let mut monitor = Monitor::new(2);
            monitor.observe(&readings, &OwnSignals::default());
            let report = monitor.observe(&readings, &OwnSignals::default());
            assert_eq!(report.devices.len(), 1);
            report.to_json();
        }
        Err(e) => assert!(e.starts_with("fuzz.json: "), "{e}"),
    }
});
