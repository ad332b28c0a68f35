//! INCR's arguments (the request's value) and its count (the reply's value).

/// Bytes of an INCR request's value.
pub const INCR_ARGS_BYTES: usize = 16;

/// Bytes of a count in an INCR reply's value.
pub const COUNT_BYTES: usize = 8;

mod field {
    use core::ops::Range;
    pub(super) const DELTA: Range<usize> = 0..8;
    pub(super) const FLOOR: Range<usize> = 8..16;
}

/// What an INCR asks: add `delta` (negative: subtract) unless the result would be below
/// `floor`. On the wire: `delta i64, floor i64`, little-endian; a floor of `i64::MIN` is no
/// floor (every count is at least that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrArgs {
    /// The amount added.
    pub delta: i64,
    /// The lowest count the result may be (`None`: no floor).
    pub floor: Option<i64>,
}

impl IncrArgs {
    /// The request's value.
    pub fn encode(&self) -> [u8; INCR_ARGS_BYTES] {
        let mut out = [0u8; INCR_ARGS_BYTES];
        out[field::DELTA].copy_from_slice(&self.delta.to_le_bytes());
        out[field::FLOOR].copy_from_slice(&self.floor.unwrap_or(i64::MIN).to_le_bytes());
        out
    }

    /// The arguments in a request's value; `None` unless it is exactly `INCR_ARGS_BYTES` long.
    pub fn decode(value: &[u8]) -> Option<IncrArgs> {
        if value.len() != INCR_ARGS_BYTES {
            return None;
        }
        let delta = i64::from_le_bytes(value[field::DELTA].try_into().ok()?);
        let floor = i64::from_le_bytes(value[field::FLOOR].try_into().ok()?);
        Some(IncrArgs { delta, floor: (floor != i64::MIN).then_some(floor) })
    }
}

/// An INCR reply's value: the count.
pub fn encode_count(count: i64) -> [u8; COUNT_BYTES] {
    count.to_le_bytes()
}

/// The count in an INCR reply's value; `None` unless it is exactly `COUNT_BYTES` long.
pub fn decode_count(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_and_min_is_no_floor() {
        for args in [
            IncrArgs { delta: -5, floor: Some(0) },
            IncrArgs { delta: i64::MAX, floor: None },
            IncrArgs { delta: 0, floor: Some(i64::MIN + 1) },
        ] {
            assert_eq!(IncrArgs::decode(&args.encode()), Some(args));
        }
        let floorless = IncrArgs { delta: 1, floor: Some(i64::MIN) };
        assert_eq!(IncrArgs::decode(&floorless.encode()).unwrap().floor, None);
        assert_eq!(IncrArgs::decode(&[0; 15]), None);
        assert_eq!(IncrArgs::decode(&[0; 17]), None);
        assert_eq!(decode_count(&encode_count(-42)), Some(-42));
        assert_eq!(decode_count(b"12"), None);
    }
}
