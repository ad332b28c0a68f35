//! The fixed message header: a checked view (`Header`) and its plain-value twin (`HeaderFields`).

/// First two bytes of every message ("cR" little-endian: 0x63, 0x52).
pub const MAGIC: u16 = 0x5263;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_BYTES: usize = 72;

mod field {
    use core::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..2;
    pub(super) const VERSION: usize = 2;
    pub(super) const OPCODE: usize = 3;
    pub(super) const FLAGS: Range<usize> = 4..6;
    pub(super) const STATUS: Range<usize> = 6..8;
    pub(super) const CLIENT_ID: Range<usize> = 8..16;
    pub(super) const TRACKING_ID: Range<usize> = 16..24;
    pub(super) const MAP_EPOCH: Range<usize> = 24..32;
    pub(super) const PARTITION: Range<usize> = 32..36;
    pub(super) const KEY_LEN: Range<usize> = 36..38;
    pub(super) const RESERVED: Range<usize> = 38..40;
    pub(super) const VALUE_LEN: Range<usize> = 40..44;
    pub(super) const FRAG_INDEX: Range<usize> = 44..48;
    pub(super) const FRAG_COUNT: Range<usize> = 48..52;
    pub(super) const TOTAL_LEN: Range<usize> = 52..56;
    pub(super) const VERSION_FIELD: Range<usize> = 56..64;
    pub(super) const TOKEN: Range<usize> = 64..72;
}

/// Header flag bits.
pub mod flags {
    /// The message is a reply.
    pub const REPLY: u16 = 1 << 0;
    /// The message carries one fragment of a larger value: `frag_index`, `frag_count` and
    /// `total_len` describe it.
    pub const FRAGMENT: u16 = 1 << 1;
    /// On a PUT/CAS fragment: the sender asks for a cumulative acknowledgement.
    pub const ACK_REQUEST: u16 = 1 << 2;
    /// On a request: send fragments `frag_index .. frag_index + frag_count` of the reply value
    /// whose version is `version` (a resumed or repaired fragmented reply).
    pub const RANGE: u16 = 1 << 3;
    /// On a reply: a cumulative acknowledgement of a fragmented write still being received;
    /// `frag_index` is the first fragment the receiver still misses.
    pub const PARTIAL: u16 = 1 << 4;
    /// On a GET: answer with the value's blob reference instead of its bytes when the value
    /// lives in the blob tier (the reply then carries this flag; see `BlobReference`).
    pub const REF_ONLY: u16 = 1 << 5;
    /// On a PUT, CAS, INCR or TOUCH request: the key gets an expiry, and the header's
    /// `partition` field (ignored on keyed requests otherwise) carries its time to live in
    /// whole seconds (0: the key never expires). See `HeaderFields::ttl_secs`.
    pub const EXPIRES: u16 = 1 << 6;
    /// On a CAS request: a VERSION_MISMATCH reply carries the key's current value when it fits
    /// one datagram. On that reply: the value is the key's current one (without the flag a
    /// mismatch reply carries no value: the key is absent, or its value is too big).
    pub const RETURN_VALUE: u16 = 1 << 7;
    /// Every flag this version knows; others make a message malformed.
    pub const KNOWN: u16 =
        REPLY | FRAGMENT | ACK_REQUEST | RANGE | PARTIAL | REF_ONLY | EXPIRES | RETURN_VALUE;
}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident : $repr:ty { $($(#[$vdoc:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name { $($(#[$vdoc])* $variant = $value,)* }

        impl $name {
            /// The value for a wire number, if this version knows it.
            pub fn from_wire(value: $repr) -> Option<Self> {
                match value { $($value => Some(Self::$variant),)* _ => None }
            }
            /// Every variant, in wire order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];
        }
    };
}

wire_enum! {
    /// What a request asks for.
    Opcode: u8 {
        /// Read a value.
        Get = 1,
        /// Write a value unconditionally.
        Put = 2,
        /// Remove a key.
        Delete = 3,
        /// Write a value if the key's version equals `version` (0: only if absent).
        Cas = 4,
        /// Liveness and address validation.
        Ping = 5,
        /// The partition map: which hash ranges live on which host:port.
        Map = 6,
        /// Counters of the serving core, as a JSON object.
        Stats = 7,
        /// Keys of partition `partition` after the key given (empty: from the first), in
        /// byte order, as many as fit one reply (`encode_scan_page`); the reply's `version` is
        /// 1 when more may follow, 0 on the last page.
        Scan = 8,
        /// The bytes of one blob chunk, named by its BLAKE3 hash as the key (content-addressed,
        /// immutable; fetched in fragments and RANGE pulls like any big value).
        Chunk = 9,
        /// Add a signed amount to the decimal counter at the key (absent: 0), unless the
        /// result would fall below a floor; the value is an `IncrArgs`, the reply's value the
        /// new count (i64 little-endian). A write: exactly once, replicated as a PUT.
        Incr = 10,
        /// Give the key's live value a new expiry (EXPIRES set: the TTL in `partition`;
        /// unset: none). No value. A write.
        Touch = 11,
    }
}

wire_enum! {
    /// The outcome carried by a reply.
    Status: u16 {
        /// Done.
        Ok = 0,
        /// The key does not exist.
        NotFound = 1,
        /// CAS: the key's version differs; the reply's `version` is the current one (0: absent).
        /// A RANGE request: the value changed since its first fragment; start again.
        VersionMismatch = 2,
        /// This endpoint does not own the key's partition; the value holds the owner's address
        /// when it is known (`encode_addr`), the header the current map epoch.
        WrongOwner = 3,
        /// Overloaded or out of a bounded resource; try again later or elsewhere.
        Busy = 4,
        /// The store cannot take the write.
        NoSpace = 5,
        /// The request could not be understood.
        Malformed = 6,
        /// The value exceeds `VALUE_BYTES_MAX`.
        TooLarge = 7,
        /// The reply would exceed three times the request bytes and the sender's address is not
        /// validated: resend with the header's `token`.
        RetryWithToken = 8,
        /// The endpoint cannot serve (for instance its log is quarantined).
        Unavailable = 9,
        /// The (client id, tracking id) already names another request (a different opcode,
        /// key, value or expected version): the server holds that request's outcome and never
        /// applies this one. A client bug; resend under a new tracking id.
        IdReused = 10,
        /// INCR: the result would be below the request's floor; nothing was written. The
        /// reply's value is the current count (i64 little-endian), its `version` the key's.
        BelowFloor = 11,
        /// INCR: the key's value is not a counter (decimal ASCII of an i64, `-` allowed), or
        /// the result would leave i64's range; nothing was written.
        NotACounter = 12,
        /// The endpoint cannot do what the request asks, for now: an expiry (EXPIRES, TOUCH)
        /// on a replicated partition (replication does not carry expiries yet). Not applied.
        Unsupported = 13,
        /// The node requires authenticated requests (`--auth-keys`) and this datagram is not
        /// sealed, names an unknown key, fails its MAC or is stale: nothing in it was done.
        /// Only its first request is answered, with a bare header.
        Unauthenticated = 14,
        /// The request's key has a role that may not do this (e.g. a `read` key's PUT, a
        /// `write` key's SCAN); nothing was done.
        Forbidden = 15,
    }
}

impl Status {
    /// A short lower-case description for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not found",
            Status::VersionMismatch => "version mismatch",
            Status::WrongOwner => "wrong owner",
            Status::Busy => "busy",
            Status::NoSpace => "no space",
            Status::Malformed => "malformed request",
            Status::TooLarge => "value too large",
            Status::RetryWithToken => "address not validated",
            Status::Unavailable => "unavailable",
            Status::IdReused => "tracking id reused for another request",
            Status::BelowFloor => "below floor",
            Status::NotACounter => "the value is not a counter",
            Status::Unsupported => "not supported on this partition",
            Status::Unauthenticated => "unauthenticated (the node needs a valid key)",
            Status::Forbidden => "forbidden for this key's role",
        }
    }
}

/// Every header field as plain values, for building messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFields {
    /// Raw opcode number (`Opcode as u8`).
    pub opcode: u8,
    /// Flag bits (`flags`).
    pub flags: u16,
    /// Raw status number (`Status as u16`); 0 on requests.
    pub status: u16,
    /// Identifies the client process; with `tracking_id` it names a request.
    pub client_id: u64,
    /// Chosen by the client, unique per request, reused when the request is resent.
    pub tracking_id: u64,
    /// The partition-map epoch the sender knows.
    pub map_epoch: u64,
    /// The partition the sender believes owns the key.
    pub partition: u32,
    /// Key bytes after the header.
    pub key_len: u16,
    /// Value bytes after the key.
    pub value_len: u32,
    /// Fragment number (FRAGMENT), or first fragment wanted (RANGE), or first missing (PARTIAL).
    pub frag_index: u32,
    /// Fragments of the whole value (FRAGMENT), or fragments wanted (RANGE).
    pub frag_count: u32,
    /// Length of the whole value.
    pub total_len: u32,
    /// Key version: CAS expectation on requests, the key's version on replies.
    pub version: u64,
    /// Address-validation token (0: none).
    pub token: u64,
}

impl HeaderFields {
    /// Writes the header into the first `HEADER_BYTES` of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than `HEADER_BYTES` (a caller bug).
    pub fn write(&self, buf: &mut [u8]) {
        let b = &mut buf[..HEADER_BYTES];
        b[field::MAGIC].copy_from_slice(&MAGIC.to_le_bytes());
        b[field::VERSION] = VERSION;
        b[field::OPCODE] = self.opcode;
        b[field::FLAGS].copy_from_slice(&self.flags.to_le_bytes());
        b[field::STATUS].copy_from_slice(&self.status.to_le_bytes());
        b[field::CLIENT_ID].copy_from_slice(&self.client_id.to_le_bytes());
        b[field::TRACKING_ID].copy_from_slice(&self.tracking_id.to_le_bytes());
        b[field::MAP_EPOCH].copy_from_slice(&self.map_epoch.to_le_bytes());
        b[field::PARTITION].copy_from_slice(&self.partition.to_le_bytes());
        b[field::KEY_LEN].copy_from_slice(&self.key_len.to_le_bytes());
        b[field::RESERVED].copy_from_slice(&[0, 0]);
        b[field::VALUE_LEN].copy_from_slice(&self.value_len.to_le_bytes());
        b[field::FRAG_INDEX].copy_from_slice(&self.frag_index.to_le_bytes());
        b[field::FRAG_COUNT].copy_from_slice(&self.frag_count.to_le_bytes());
        b[field::TOTAL_LEN].copy_from_slice(&self.total_len.to_le_bytes());
        b[field::VERSION_FIELD].copy_from_slice(&self.version.to_le_bytes());
        b[field::TOKEN].copy_from_slice(&self.token.to_le_bytes());
    }

    /// The reply skeleton for this request: same ids, opcode and partition, REPLY set.
    pub fn reply(&self, status: Status) -> HeaderFields {
        HeaderFields {
            opcode: self.opcode,
            flags: flags::REPLY,
            status: status as u16,
            client_id: self.client_id,
            tracking_id: self.tracking_id,
            map_epoch: self.map_epoch,
            partition: self.partition,
            ..HeaderFields::default()
        }
    }

    /// Typed opcode, if known.
    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_wire(self.opcode)
    }

    /// Typed status, if known.
    pub fn status(&self) -> Option<Status> {
        Status::from_wire(self.status)
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// A request's time to live in seconds: `Some` when EXPIRES is set (then `partition`
    /// carries it; 0: never expires), `None` otherwise.
    pub fn ttl_secs(&self) -> Option<u32> {
        self.has(flags::EXPIRES).then_some(self.partition)
    }

    /// Sets (or clears, with `None`) a request's time to live: EXPIRES and `partition`.
    pub fn set_ttl_secs(&mut self, ttl_secs: Option<u32>) {
        match ttl_secs {
            Some(ttl) => {
                self.flags |= flags::EXPIRES;
                self.partition = ttl;
            }
            None => self.flags &= !flags::EXPIRES,
        }
    }
}

/// A view over a header. Built with `Header::new_checked`, so every accessor is infallible.
#[derive(Clone, Copy, Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` after checking it holds a whole header with our magic and version.
    pub fn new_checked(buffer: T) -> Result<Self, crate::Malformed> {
        let b = buffer.as_ref();
        if b.len() < HEADER_BYTES {
            return Err(crate::Malformed::Truncated);
        }
        if u16::from_le_bytes([b[0], b[1]]) != MAGIC {
            return Err(crate::Malformed::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(crate::Malformed::BadVersion);
        }
        Ok(Header { buffer })
    }

    fn bytes<const N: usize>(&self, range: core::ops::Range<usize>) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buffer.as_ref()[range]);
        out
    }

    /// Every field as a plain value.
    pub fn fields(&self) -> HeaderFields {
        let b = self.buffer.as_ref();
        HeaderFields {
            opcode: b[field::OPCODE],
            flags: u16::from_le_bytes(self.bytes(field::FLAGS)),
            status: u16::from_le_bytes(self.bytes(field::STATUS)),
            client_id: u64::from_le_bytes(self.bytes(field::CLIENT_ID)),
            tracking_id: u64::from_le_bytes(self.bytes(field::TRACKING_ID)),
            map_epoch: u64::from_le_bytes(self.bytes(field::MAP_EPOCH)),
            partition: u32::from_le_bytes(self.bytes(field::PARTITION)),
            key_len: u16::from_le_bytes(self.bytes(field::KEY_LEN)),
            value_len: u32::from_le_bytes(self.bytes(field::VALUE_LEN)),
            frag_index: u32::from_le_bytes(self.bytes(field::FRAG_INDEX)),
            frag_count: u32::from_le_bytes(self.bytes(field::FRAG_COUNT)),
            total_len: u32::from_le_bytes(self.bytes(field::TOTAL_LEN)),
            version: u64::from_le_bytes(self.bytes(field::VERSION_FIELD)),
            token: u64::from_le_bytes(self.bytes(field::TOKEN)),
        }
    }

    /// The reserved field, which must be zero in version 1.
    pub fn reserved(&self) -> u16 {
        u16::from_le_bytes(self.bytes(field::RESERVED))
    }
}
