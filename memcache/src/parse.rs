//! memcached's text protocol, parsed incrementally and without I/O: `parse` looks at the
//! bytes received so far and says what the first command is, that more bytes are needed,
//! or what is wrong and how many bytes to drop. Commands borrow the input (no copy).

/// Longest key memcached accepts.
pub const KEY_BYTES_MAX: usize = 250;
/// Longest command line (a multi-key get of 250-byte keys fits about 260 keys).
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Most keys one get may name.
pub const KEYS_PER_GET_MAX: usize = 1024;

/// How a storage command stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    /// Unconditionally.
    Set,
    /// Only if absent.
    Add,
    /// Only if present.
    Replace,
    /// After the present value.
    Append,
    /// Before the present value.
    Prepend,
    /// Only if the version is the given CAS token.
    Cas,
}

/// One parsed command, borrowing the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// get/gets (`cas`: with CAS tokens), gat/gats (`touch`: the new exptime).
    Get {
        /// The keys, in order.
        keys: Keys<'a>,
        /// Whether each value carries its CAS token (gets, gats).
        cas: bool,
        /// gat/gats: the exptime to set on each key found.
        touch: Option<i64>,
    },
    /// set, add, replace, append, prepend, cas.
    Store {
        /// How.
        mode: StoreMode,
        /// The key.
        key: &'a [u8],
        /// Client flags.
        flags: u32,
        /// memcached exptime (see `expiry::expires_at_ns`).
        exptime: i64,
        /// The data block.
        value: &'a [u8],
        /// cas: the expected token.
        cas: u64,
        /// No reply wanted.
        noreply: bool,
    },
    /// delete.
    Delete {
        /// The key.
        key: &'a [u8],
        /// No reply wanted.
        noreply: bool,
    },
    /// incr (`decr` false) or decr.
    Arith {
        /// The key.
        key: &'a [u8],
        /// By how much.
        delta: u64,
        /// decr instead of incr.
        decr: bool,
        /// No reply wanted.
        noreply: bool,
    },
    /// touch.
    Touch {
        /// The key.
        key: &'a [u8],
        /// The new exptime.
        exptime: i64,
        /// No reply wanted.
        noreply: bool,
    },
    /// flush_all (no delay: a delay is refused).
    FlushAll {
        /// No reply wanted.
        noreply: bool,
    },
    /// version.
    Version,
    /// verbosity (accepted, changes nothing).
    Verbosity {
        /// No reply wanted.
        noreply: bool,
    },
    /// stats, with its optional argument.
    Stats {
        /// `stats ARG` (only plain `stats` and `stats settings` are answered in full).
        arg: Option<&'a [u8]>,
    },
    /// quit: close the connection.
    Quit,
}

/// The keys of a get line: borrowed from the line, split on spaces when iterated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys<'a>(&'a [u8]);

impl<'a> Keys<'a> {
    /// Each key in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        self.0.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }
}

/// What is wrong with the input; `reply` is memcached's wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not a command this door knows.
    UnknownCommand,
    /// Wrong arguments, a key over 250 bytes, a number that does not parse.
    BadFormat,
    /// The data block is not followed by `\r\n`.
    BadDataChunk,
    /// The value is over the item size limit (its bytes are swallowed).
    TooLarge,
    /// incr/decr with a delta that is not a number.
    BadDelta,
    /// No newline within `LINE_BYTES_MAX` bytes (the rest of the line is swallowed).
    LineTooLong,
    /// flush_all with a delay (not supported).
    FlushDelay,
    /// A binary-protocol request (its magic byte 0x80): not served; TCP closes after this.
    BinaryProtocol,
}

impl ParseError {
    /// The reply line, `\r\n` included.
    pub fn reply(self) -> &'static [u8] {
        match self {
            ParseError::UnknownCommand => b"ERROR\r\n",
            ParseError::BadFormat => b"CLIENT_ERROR bad command line format\r\n",
            ParseError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            ParseError::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
            ParseError::BadDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            ParseError::LineTooLong => b"CLIENT_ERROR line too long\r\n",
            ParseError::FlushDelay => b"CLIENT_ERROR flush_all with a delay is not supported\r\n",
            ParseError::BinaryProtocol => b"SERVER_ERROR the binary protocol is not served\r\n",
        }
    }
}

/// The outcome of looking at the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole command, taking the first `used` bytes.
    Command(Command<'a>, usize),
    /// Not enough bytes yet.
    Incomplete,
    /// Bad input: answer `error`, drop the first `used` bytes, then swallow `swallow` more
    /// (a refused value's data block, or the rest of an overlong line when `swallow` is
    /// `usize::MAX`: up to and including the next newline).
    Error {
        /// What is wrong.
        error: ParseError,
        /// Bytes to drop now.
        used: usize,
        /// Bytes to swallow after them.
        swallow: usize,
    },
}

/// Whether a connection that starts with `input` speaks the binary protocol (its requests
/// start with the magic byte 0x80; memcached tells the protocols apart by the first byte).
pub fn is_binary(input: &[u8]) -> bool {
    input.first() == Some(&0x80)
}

/// Parses the first command of `input`; values over `item_bytes_max` are refused.
pub fn parse(input: &[u8], item_bytes_max: usize) -> Parsed<'_> {
    let Some(newline) = input.iter().take(LINE_BYTES_MAX).position(|&b| b == b'\n') else {
        if input.len() >= LINE_BYTES_MAX {
            let error = ParseError::LineTooLong;
            return Parsed::Error { error, used: LINE_BYTES_MAX, swallow: usize::MAX };
        }
        return Parsed::Incomplete;
    };
    let line_used = newline + 1;
    let line = input[..newline].strip_suffix(b"\r").unwrap_or(&input[..newline]);
    let error = |error| Parsed::Error { error, used: line_used, swallow: 0 };
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let Some(name) = tokens.next() else {
        return error(ParseError::UnknownCommand);
    };
    let rest_at = (name.as_ptr() as usize - line.as_ptr() as usize) + name.len();
    let rest = &line[rest_at..];
    let command = match name {
        b"get" | b"gets" => get(rest, name == b"gets", None),
        b"gat" | b"gats" => {
            let Some(exptime) = tokens.next() else { return error(ParseError::UnknownCommand) };
            let Some(exptime) = number::<i64>(exptime) else { return error(ParseError::BadFormat) };
            let keys_at = exptime_end(rest);
            get(&rest[keys_at..], name == b"gats", Some(exptime))
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            return storage(name, tokens, input, line_used, item_bytes_max);
        }
        b"delete" => delete(tokens),
        b"incr" | b"decr" => arith(tokens, name == b"decr"),
        b"touch" => touch(tokens),
        b"flush_all" => flush_all(tokens),
        b"version" => Ok(Command::Version),
        b"verbosity" => verbosity(tokens),
        b"stats" => Ok(Command::Stats { arg: tokens.next() }),
        b"quit" => Ok(Command::Quit),
        _ => Err(ParseError::UnknownCommand),
    };
    match command {
        Ok(command) => Parsed::Command(command, line_used),
        Err(e) => error(e),
    }
}

/// Where the exptime token of a gat line's rest ends.
fn exptime_end(rest: &[u8]) -> usize {
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    start + rest[start..].iter().position(|&b| b == b' ').unwrap_or(rest.len() - start)
}

fn get(rest: &[u8], cas: bool, touch: Option<i64>) -> Result<Command<'_>, ParseError> {
    let keys = Keys(rest);
    let mut count = 0;
    for key in keys.iter() {
        if key.len() > KEY_BYTES_MAX {
            return Err(ParseError::BadFormat);
        }
        count += 1;
    }
    match count {
        0 => Err(ParseError::UnknownCommand),
        n if n > KEYS_PER_GET_MAX => Err(ParseError::BadFormat),
        _ => Ok(Command::Get { keys, cas, touch }),
    }
}

fn storage<'a>(
    name: &[u8],
    mut tokens: impl Iterator<Item = &'a [u8]>,
    input: &'a [u8],
    line_used: usize,
    item_bytes_max: usize,
) -> Parsed<'a> {
    let error = |error| Parsed::Error { error, used: line_used, swallow: 0 };
    let mode = match name {
        b"set" => StoreMode::Set,
        b"add" => StoreMode::Add,
        b"replace" => StoreMode::Replace,
        b"append" => StoreMode::Append,
        b"prepend" => StoreMode::Prepend,
        _ => StoreMode::Cas,
    };
    let (Some(key), Some(flags), Some(exptime), Some(bytes)) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return error(ParseError::BadFormat);
    };
    let cas = if mode == StoreMode::Cas {
        match tokens.next().and_then(number::<u64>) {
            Some(cas) => cas,
            None => return error(ParseError::BadFormat),
        }
    } else {
        0
    };
    let noreply = match (tokens.next(), tokens.next()) {
        (None, None) => false,
        (Some(b"noreply"), None) => true,
        _ => return error(ParseError::BadFormat),
    };
    let (Some(flags), Some(exptime), Some(bytes)) =
        (number::<u32>(flags), number::<i64>(exptime), number::<u64>(bytes))
    else {
        return error(ParseError::BadFormat);
    };
    if key.len() > KEY_BYTES_MAX {
        return error(ParseError::BadFormat);
    }
    if bytes > item_bytes_max as u64 {
        // memcached swallows the data block it will not store, then goes on.
        let swallow = usize::try_from(bytes).unwrap_or(usize::MAX - 2).saturating_add(2);
        return Parsed::Error { error: ParseError::TooLarge, used: line_used, swallow };
    }
    let bytes = bytes as usize;
    let Some(block) = input.get(line_used..line_used + bytes + 2) else {
        return Parsed::Incomplete;
    };
    let used = line_used + bytes + 2;
    if &block[bytes..] != b"\r\n" {
        return Parsed::Error { error: ParseError::BadDataChunk, used, swallow: 0 };
    }
    let value = &block[..bytes];
    Parsed::Command(Command::Store { mode, key, flags, exptime, value, cas, noreply }, used)
}

fn delete<'a>(mut tokens: impl Iterator<Item = &'a [u8]>) -> Result<Command<'a>, ParseError> {
    let key = tokens.next().ok_or(ParseError::UnknownCommand)?;
    if key.len() > KEY_BYTES_MAX {
        return Err(ParseError::BadFormat);
    }
    // The old `delete KEY 0` form is accepted; any other time is not.
    let noreply = match (tokens.next(), tokens.next(), tokens.next()) {
        (None, _, _) => false,
        (Some(b"noreply"), None, _) => true,
        (Some(b"0"), None, _) => false,
        (Some(b"0"), Some(b"noreply"), None) => true,
        _ => return Err(ParseError::BadFormat),
    };
    Ok(Command::Delete { key, noreply })
}

fn arith<'a>(
    mut tokens: impl Iterator<Item = &'a [u8]>,
    decr: bool,
) -> Result<Command<'a>, ParseError> {
    let (Some(key), Some(delta)) = (tokens.next(), tokens.next()) else {
        return Err(ParseError::UnknownCommand);
    };
    if key.len() > KEY_BYTES_MAX {
        return Err(ParseError::BadFormat);
    }
    let noreply = noreply(tokens)?;
    let delta = number::<u64>(delta).ok_or(ParseError::BadDelta)?;
    Ok(Command::Arith { key, delta, decr, noreply })
}

fn touch<'a>(mut tokens: impl Iterator<Item = &'a [u8]>) -> Result<Command<'a>, ParseError> {
    let (Some(key), Some(exptime)) = (tokens.next(), tokens.next()) else {
        return Err(ParseError::UnknownCommand);
    };
    if key.len() > KEY_BYTES_MAX {
        return Err(ParseError::BadFormat);
    }
    let noreply = noreply(tokens)?;
    let exptime = number::<i64>(exptime).ok_or(ParseError::BadFormat)?;
    Ok(Command::Touch { key, exptime, noreply })
}

fn flush_all<'a>(mut tokens: impl Iterator<Item = &'a [u8]>) -> Result<Command<'a>, ParseError> {
    let noreply = match (tokens.next(), tokens.next(), tokens.next()) {
        (None, _, _) => false,
        (Some(b"noreply"), None, _) => true,
        (Some(b"0"), None, _) => false,
        (Some(b"0"), Some(b"noreply"), None) => true,
        (Some(t), _, _) if number::<u64>(t).is_some() => return Err(ParseError::FlushDelay),
        _ => return Err(ParseError::BadFormat),
    };
    Ok(Command::FlushAll { noreply })
}

fn verbosity<'a>(mut tokens: impl Iterator<Item = &'a [u8]>) -> Result<Command<'a>, ParseError> {
    let level = tokens.next().ok_or(ParseError::UnknownCommand)?;
    number::<u32>(level).ok_or(ParseError::BadFormat)?;
    Ok(Command::Verbosity { noreply: noreply(tokens)? })
}

fn noreply<'a>(mut tokens: impl Iterator<Item = &'a [u8]>) -> Result<bool, ParseError> {
    match (tokens.next(), tokens.next()) {
        (None, None) => Ok(false),
        (Some(b"noreply"), None) => Ok(true),
        _ => Err(ParseError::BadFormat),
    }
}

/// A decimal number (a leading `-` only for signed types), nothing else.
fn number<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
