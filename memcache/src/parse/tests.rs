use super::*;

const MAX: usize = 1 << 20;

fn command(input: &[u8]) -> (Command<'_>, usize) {
    match parse(input, MAX) {
        Parsed::Command(c, used) => (c, used),
        other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(input)),
    }
}

fn refused(input: &[u8]) -> (ParseError, usize, usize) {
    match parse(input, MAX) {
        Parsed::Error { error, used, swallow } => (error, used, swallow),
        other => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn each_command_parses_with_its_arguments() {
    let (c, used) = command(b"get a bb  ccc\r\nrest");
    assert_eq!(used, 15);
    let Command::Get { keys, cas: false, touch: None } = c else { panic!("{c:?}") };
    assert_eq!(keys.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"bb", b"ccc"]);
    let (c, _) = command(b"gats 100 k1 k2\r\n");
    let Command::Get { keys, cas: true, touch: Some(100) } = c else { panic!("{c:?}") };
    assert_eq!(keys.iter().collect::<Vec<_>>(), vec![&b"k1"[..], b"k2"]);
    let (c, used) = command(b"set k 5 -1 3 noreply\r\nabc\r\nget");
    assert_eq!(used, 27);
    assert_eq!(
        c,
        Command::Store {
            mode: StoreMode::Set,
            key: b"k",
            flags: 5,
            exptime: -1,
            value: b"abc",
            cas: 0,
            noreply: true
        }
    );
    let (c, _) = command(b"cas k 0 0 1 77\r\nx\r\n");
    assert!(matches!(c, Command::Store { mode: StoreMode::Cas, cas: 77, noreply: false, .. }));
    // A bare \n ends a line too, and the data block may hold \r\n.
    let (c, used) = command(b"append k 0 0 4\na\r\nb\r\n");
    assert_eq!(used, 21);
    assert!(matches!(c, Command::Store { mode: StoreMode::Append, value: b"a\r\nb", .. }));
    assert_eq!(command(b"delete k\r\n").0, Command::Delete { key: b"k", noreply: false });
    assert_eq!(command(b"delete k 0 noreply\r\n").0, Command::Delete { key: b"k", noreply: true });
    assert_eq!(
        command(b"decr k 18446744073709551615\r\n").0,
        Command::Arith { key: b"k", delta: u64::MAX, decr: true, noreply: false }
    );
    assert_eq!(
        command(b"touch k 10 noreply\r\n").0,
        Command::Touch { key: b"k", exptime: 10, noreply: true }
    );
    assert_eq!(command(b"flush_all\r\n").0, Command::FlushAll { noreply: false });
    assert_eq!(command(b"flush_all 0 noreply\r\n").0, Command::FlushAll { noreply: true });
    assert_eq!(command(b"version\r\n").0, Command::Version);
    assert_eq!(command(b"verbosity 1\r\n").0, Command::Verbosity { noreply: false });
    assert_eq!(command(b"stats\r\n").0, Command::Stats { arg: None });
    assert_eq!(command(b"stats settings\r\n").0, Command::Stats { arg: Some(b"settings") });
    assert_eq!(command(b"quit\r\n").0, Command::Quit);
}

#[test]
fn malformed_lines_get_memcacheds_errors_and_consume_only_their_line() {
    for (line, want) in [
        (&b"bogus\r\n"[..], ParseError::UnknownCommand),
        (b"\r\n", ParseError::UnknownCommand),
        (b"get\r\n", ParseError::UnknownCommand),
        (b"set k 0 0\r\n", ParseError::BadFormat),
        (b"set k x 0 1\r\n", ParseError::BadFormat),
        (b"set k 4294967296 0 1\r\n", ParseError::BadFormat),
        (b"set k 0 0 -1\r\n", ParseError::BadFormat),
        (b"set k 0 0 1 bogus\r\n", ParseError::BadFormat),
        (b"cas k 0 0 1\r\n", ParseError::BadFormat),
        (b"incr k x\r\n", ParseError::BadDelta),
        (b"incr k -1\r\n", ParseError::BadDelta),
        (b"delete k 5\r\n", ParseError::BadFormat),
        (b"touch k soon\r\n", ParseError::BadFormat),
        (b"flush_all 10\r\n", ParseError::FlushDelay),
        (b"GET k\r\n", ParseError::UnknownCommand),
    ] {
        let (error, used, swallow) = refused(line);
        assert_eq!(
            (error, used, swallow),
            (want, line.len(), 0),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    let long_key = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(refused(long_key.as_bytes()).0, ParseError::BadFormat);
    let ok_key = format!("get {}\r\n", "k".repeat(250));
    command(ok_key.as_bytes());
    let long_set = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(251));
    assert_eq!(refused(long_set.as_bytes()).0, ParseError::BadFormat);
    assert_eq!(ParseError::UnknownCommand.reply(), b"ERROR\r\n");
    // A binary-protocol GET (magic 0x80) is told apart by its first byte.
    assert!(is_binary(&[0x80, 0x00, 0x00, 0x01]));
    assert!(!is_binary(b"get k\r\n") && !is_binary(b""));
}

#[test]
fn a_bad_data_chunk_is_consumed_whole_and_a_too_large_value_is_swallowed() {
    let (error, used, swallow) = refused(b"set k 0 0 3\r\nabcd\r\n");
    assert_eq!((error, used, swallow), (ParseError::BadDataChunk, 18, 0));
    let big = format!("set k 0 0 {}\r\n", MAX + 1);
    let (error, used, swallow) = refused(big.as_bytes());
    assert_eq!((error, used, swallow), (ParseError::TooLarge, big.len(), MAX + 3));
    // At the limit exactly: stored.
    let mut at_limit = format!("set k 0 0 {MAX}\r\n").into_bytes();
    at_limit.extend(std::iter::repeat_n(b'v', MAX));
    at_limit.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&at_limit, MAX), Parsed::Command(Command::Store { .. }, _)));
}

#[test]
fn a_line_without_newline_is_incomplete_until_it_is_too_long() {
    assert_eq!(parse(b"get abc", MAX), Parsed::Incomplete);
    assert_eq!(parse(b"set k 0 0 5\r\nabc", MAX), Parsed::Incomplete);
    assert_eq!(parse(b"set k 0 0 5\r\nabcde\r", MAX), Parsed::Incomplete);
    let long = vec![b'a'; LINE_BYTES_MAX];
    let (error, used, swallow) = match parse(&long, MAX) {
        Parsed::Error { error, used, swallow } => (error, used, swallow),
        other => panic!("{other:?}"),
    };
    assert_eq!((error, used, swallow), (ParseError::LineTooLong, LINE_BYTES_MAX, usize::MAX));
}

/// A pipelined stream cut at every byte parses to the same commands as the whole stream.
#[test]
fn a_pipeline_split_at_every_byte_parses_the_same() {
    let stream: &[u8] =
        b"set a 1 0 3\r\nabc\r\nget a b\r\nbogus\r\nincr n 5 noreply\r\ncas a 0 0 2 9\r\nxy\r\nquit\r\n";
    let whole = replay(&[stream]);
    assert_eq!(whole.len(), 6);
    for cut in 0..=stream.len() {
        assert_eq!(replay(&[&stream[..cut], &stream[cut..]]), whole, "cut at {cut}");
    }
}

/// Feeds `chunks` as a connection receives them; returns each outcome as text.
fn replay(chunks: &[&[u8]]) -> Vec<String> {
    let mut buffer = Vec::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match parse(&buffer, MAX) {
                Parsed::Incomplete => break,
                Parsed::Command(c, used) => {
                    seen.push(format!("{c:?}"));
                    buffer.drain(..used);
                }
                Parsed::Error { error, used, .. } => {
                    seen.push(format!("{error:?}"));
                    buffer.drain(..used);
                }
            }
        }
    }
    seen
}

#[test]
fn random_bytes_never_panic_and_always_make_progress() {
    let mut rng = testkit::Rng::from_seed(12);
    let alphabet = b"getsadcrpln 0123456789\r\n-xyz";
    for _ in 0..20_000 {
        let len = rng.below(80) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(10) == 0 {
                    rng.below(256) as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                }
            })
            .collect();
        match parse(&input, 64) {
            Parsed::Incomplete => {
                // Only a line still open, or a storage command waiting for its data block.
                let storage =
                    [&b"set "[..], b"add ", b"replace ", b"append ", b"prepend ", b"cas "];
                let first = input.iter().position(|&b| b != b' ').unwrap_or(0);
                assert!(
                    !input.contains(&b'\n')
                        || storage.iter().any(|s| input[first..].starts_with(s)),
                    "{input:?}"
                );
            }
            Parsed::Command(_, used) | Parsed::Error { used, .. } => {
                assert!(used > 0 && used <= input.len())
            }
        }
    }
}
