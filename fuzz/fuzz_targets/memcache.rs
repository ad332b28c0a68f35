//! Any bytes through the memcached door's parser, as a connection would feed them: whole and
//! cut in two at a point the input chooses. It must never panic, always make progress, and
//! parse the same commands either way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memcache::parse::{parse, Parsed};

fn commands(chunks: &[&[u8]]) -> Vec<String> {
    let mut buffer = Vec::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match parse(&buffer, 4096) {
                Parsed::Incomplete => break,
                Parsed::Command(c, used) => {
                    assert!(used > 0 && used <= buffer.len());
                    seen.push(format!("{c:?}"));
                    buffer.drain(..used);
                }
                Parsed::Error { error, used, .. } => {
                    assert!(used > 0 && used <= buffer.len());
                    seen.push(format!("{error:?}"));
                    buffer.drain(..used);
                }
            }
        }
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let cut = usize::from(cut).min(input.len());
    let whole = commands(&[input]);
    // Swallowing (of refused values, long lines) is the connection's, not the parser's: only
    // inputs without them must agree cut or whole.
    if !whole.iter().any(|c| c == "TooLarge" || c == "LineTooLong") {
        assert_eq!(commands(&[&input[..cut], &input[cut..]]), whole);
    }
});
