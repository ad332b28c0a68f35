//! Counters: how a count is kept in a value, shared by every protocol that counts (cradle's
//! INCR and the memcached door's incr/decr), and cradle's INCR step.
//!
//! A count is kept as decimal ASCII, memcached's representation, so a counter written by
//! either protocol reads as a number through the other and through a plain GET. cradle's
//! counts are signed 64-bit (a leading `-`); memcached's are unsigned 64-bit, so a negative
//! count is "non-numeric" to the door and one above `i64::MAX` is not a counter to INCR.

use proto::IncrArgs;

/// Longest text of a count: a sign and 39 digits cover every i128.
const TEXT_BYTES_MAX: usize = 40;

/// Most digits a stored count may have (`u64::MAX` has 20).
const DIGITS_MAX: usize = 20;

/// The count a value holds, if it holds one: decimal digits with an optional leading `-`;
/// trailing spaces and a CRLF are ignored (memcached's in-place decr leaves spaces).
pub fn parse(value: &[u8]) -> Option<i128> {
    let text = value.strip_suffix(b"\r\n").unwrap_or(value);
    let end = text.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let text = &text[..end];
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits.iter().fold(0i128, |n, &d| n * 10 + i128::from(d - b'0'));
    Some(if negative { -magnitude } else { magnitude })
}

/// A count as the text stored for it.
#[derive(Clone, Copy, Debug)]
pub struct Text {
    bytes: [u8; TEXT_BYTES_MAX],
    len: usize,
}

impl Text {
    /// The decimal text of `count`.
    pub fn of(count: i128) -> Text {
        let mut bytes = [0u8; TEXT_BYTES_MAX];
        let mut digits = [0u8; TEXT_BYTES_MAX];
        let mut n = count.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut at = 0;
        if count < 0 {
            bytes[0] = b'-';
            at = 1;
        }
        for (i, &d) in digits[..len].iter().rev().enumerate() {
            bytes[at + i] = d;
        }
        Text { bytes, len: at + len }
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Why an INCR changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The result would be below the floor; the count stays this.
    BelowFloor(i64),
    /// The value is not an i64 count, or the result would leave i64's range.
    NotACounter,
}

/// cradle's INCR: the count after adding `args.delta` to the value `current` holds (an absent
/// key counts 0), unless the result would be below `args.floor`.
pub fn step(current: Option<&[u8]>, args: IncrArgs) -> Result<i64, Refused> {
    let count = match current {
        None => 0,
        Some(value) => {
            parse(value).and_then(|n| i64::try_from(n).ok()).ok_or(Refused::NotACounter)?
        }
    };
    let next = count.checked_add(args.delta).ok_or(Refused::NotACounter)?;
    match args.floor {
        Some(floor) if next < floor => Err(Refused::BelowFloor(count)),
        _ => Ok(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_print_as_decimal() {
        assert_eq!(parse(b"42"), Some(42));
        assert_eq!(parse(b"42  "), Some(42));
        assert_eq!(parse(b"7\r\n"), Some(7));
        assert_eq!(parse(b"-17"), Some(-17));
        assert_eq!(parse(b"18446744073709551615"), Some(u64::MAX.into()));
        for bad in [&b""[..], b"-", b"4x", b" 4", b"abc", b"--1", b"+1", b"123456789012345678901"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        for n in [0i128, 9, 10, -1, i64::MIN.into(), i64::MAX.into(), u64::MAX.into()] {
            let text = Text::of(n);
            assert_eq!(text.as_bytes(), n.to_string().as_bytes());
            assert_eq!(parse(text.as_bytes()), Some(n));
        }
    }

    #[test]
    fn incr_counts_from_zero_and_keeps_its_floor() {
        let args = |delta, floor| IncrArgs { delta, floor };
        assert_eq!(step(None, args(5, None)), Ok(5));
        assert_eq!(step(None, args(-1, Some(0))), Err(Refused::BelowFloor(0)));
        assert_eq!(step(Some(b"3"), args(-3, Some(0))), Ok(0), "the floor itself is allowed");
        assert_eq!(step(Some(b"3"), args(-4, Some(0))), Err(Refused::BelowFloor(3)));
        assert_eq!(step(Some(b"-3"), args(-4, None)), Ok(-7));
        assert_eq!(step(Some(b"x"), args(1, None)), Err(Refused::NotACounter));
        assert_eq!(step(Some(b"18446744073709551615"), args(0, None)), Err(Refused::NotACounter));
        let max = Text::of(i64::MAX.into());
        assert_eq!(step(Some(max.as_bytes()), args(1, None)), Err(Refused::NotACounter));
        assert_eq!(step(Some(max.as_bytes()), args(-1, Some(0))), Ok(i64::MAX - 1));
    }
}
