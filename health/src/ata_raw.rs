//! Decoding an ATA attribute's raw value, which vendors pack in their own ways.
//!
//! The raw value is 48 bits whose layout the standard leaves to the vendor. smartctl knows many
//! layouts from its drive database and prints its decoding in `raw.string` (for instance
//! `"0 0 0"` for Seagate's attribute 188, three 16-bit counters, or `"12 (Min/Max 0/0)"`); its
//! first number is the counter. When smartctl did not know the layout it prints the whole
//! 48-bit number, and a packed value then looks absurdly large (Seagate's 188 of
//! `51540393996` is 0xC_000C_000C: three fields of 12). So:
//!
//! 1. the counter is the first number of `raw.string` (decimal, or hex with `0x`); without
//!    one, `raw.value`;
//! 2. if that number is the undecoded 48-bit value and too large to be one count, it is
//!    unpacked: attribute 188 (command timeouts) keeps its low 16 bits, the field holding the
//!    count on the drives that pack it; any other attribute above 2^32 keeps its low 32 bits
//!    (no drive has four billion spare sectors; the high bits are vendor data).

/// A decoded raw counter, and how it was unpacked when it was (for the reason's sentence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) value: u64,
    pub(crate) unpacked: Option<String>,
}

const COMMAND_TIMEOUT: u64 = 188;

/// The counter in attribute `id`'s raw value (`raw.value`, `raw.string`), or `None` when
/// neither holds a number.
pub(crate) fn decode(id: u64, raw_value: Option<u64>, raw_string: Option<&str>) -> Option<Decoded> {
    let printed = raw_string.and_then(first_number);
    let number = printed.or(raw_value)?;
    let undecoded = !matches!(raw_value, Some(raw) if raw != number);
    if !undecoded {
        return Some(Decoded { value: number, unpacked: None });
    }
    let (mask, bits) = if id == COMMAND_TIMEOUT { (0xFFFF, 16) } else { (0xFFFF_FFFF, 32) };
    if number <= mask {
        return Some(Decoded { value: number, unpacked: None });
    }
    Some(Decoded {
        value: number & mask,
        unpacked: Some(format!("packed raw {number:#x}, low {bits} bits")),
    })
}

/// The first number in a raw string: its first token up to a space or `(`.
fn first_number(text: &str) -> Option<u64> {
    let token = text.trim_start().split(|c: char| c.is_whitespace() || c == '(').next()?;
    match token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => token.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, raw.value, raw.string, the counter, whether it was unpacked)
    type Row = (u64, Option<u64>, Option<&'static str>, Option<u64>, bool);

    #[test]
    fn raw_values_decode_by_the_documented_rule() {
        let table: &[Row] = &[
            (5, Some(0), Some("0"), Some(0), false),
            (5, Some(304), Some("304"), Some(304), false),
            // Seagate's 188 as smartctl decodes it, and as it prints it undecoded.
            (188, Some(0), Some("0 0 0"), Some(0), false),
            (188, Some(51_540_393_996), Some("51540393996"), Some(12), true),
            (188, Some(17_180_131_332), Some("17180131332"), Some(4), true),
            (188, Some(0x0003_0002_0001), Some("1 2 3"), Some(1), false),
            (188, Some(10), Some("10"), Some(10), false),
            (197, Some(0x1234_0000_0007), None, Some(7), true),
            (5, Some(3), Some("3 (Average 1)"), Some(3), false),
            (5, Some(9), Some("9(1)"), Some(9), false),
            (5, Some(0x2a), Some("0x00000000002a"), Some(42), false),
            (5, None, Some("17"), Some(17), false),
            (5, Some(8), Some("n/a"), Some(8), false),
            (5, None, Some("-"), None, false),
            (5, None, None, None, false),
        ];
        for &(id, value, string, expected, unpacked) in table {
            let decoded = decode(id, value, string);
            assert_eq!(decoded.as_ref().map(|d| d.value), expected, "{id} {value:?} {string:?}");
            assert_eq!(decoded.is_some_and(|d| d.unpacked.is_some()), unpacked, "{id} {value:?}");
        }
    }
}
