//! Protobuf wire primitives for the hand-written decoders, and the internal error type that
//! collects the field path on its way up (so the happy path pays nothing for error context).

use std::fmt;

/// Wire types (the low 3 bits of a field key).
pub(crate) const VARINT: u32 = 0;
pub(crate) const I64: u32 = 1;
pub(crate) const LEN: u32 = 2;
pub(crate) const I32: u32 = 5;

/// A field key as it appears on the wire: `(field_number << 3) | wire_type`.
pub(crate) const fn key(field: u32, wire_type: u32) -> u32 {
    (field << 3) | wire_type
}

/// What went wrong, without the where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Truncated {
        what: &'static str,
    },
    VarintTooLong,
    LengthPastEnd {
        len: u64,
        remaining: usize,
    },
    FieldNumberZero,
    KeyTooLarge(u64),
    /// Groups (3, 4) are deprecated and never used by OTLP; 6 and 7 do not exist.
    BadWireType(u32),
    /// A known field arrived with a wire type other than its declared one.
    WrongWireType {
        expected: u32,
        got: u32,
    },
    BadIdLength {
        len: usize,
        expected: usize,
    },
    /// A nested value (array/kvlist AnyValue, entity ref, discarded oneof variant) that prost
    /// rejected.
    Nested(String),
    TooLarge {
        len: usize,
        max: usize,
    },
    /// Building an Arrow array failed: a decoder bug, reported rather than panicking.
    Internal(String),
}

/// One step of a field path, innermost first while the error bubbles up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg {
    Field(&'static str),
    Index(&'static str, u32),
}

/// The internal error: boxed so `Result<_, Error>` stays one word on the hot path.
#[derive(Debug)]
pub(crate) struct ErrorInner {
    pub kind: Kind,
    /// Absolute byte offset in the request where the problem was seen, when known.
    pub offset: Option<usize>,
    pub path: Vec<Seg>,
}

pub(crate) type Error = Box<ErrorInner>;
pub(crate) type R<T> = Result<T, Error>;

#[cold]
pub(crate) fn err(kind: Kind, offset: Option<usize>) -> Error {
    Box::new(ErrorInner {
        kind,
        offset,
        path: Vec::new(),
    })
}

#[cold]
pub(crate) fn field_err(kind: Kind, field: &'static str) -> Error {
    Box::new(ErrorInner {
        kind,
        offset: None,
        path: vec![Seg::Field(field)],
    })
}

/// Adds path context to an error as it bubbles up. Only the error path runs these.
pub(crate) trait Ctx<T> {
    fn at(self, field: &'static str) -> R<T>;
    fn at_idx(self, field: &'static str, index: u32) -> R<T>;
}

impl<T> Ctx<T> for R<T> {
    #[inline(always)]
    fn at(self, field: &'static str) -> R<T> {
        self.map_err(|mut e| {
            e.path.push(Seg::Field(field));
            e
        })
    }
    #[inline(always)]
    fn at_idx(self, field: &'static str, index: u32) -> R<T> {
        self.map_err(|mut e| {
            e.path.push(Seg::Index(field, index));
            e
        })
    }
}

impl ErrorInner {
    /// The path as the client reads it: `resource_spans[0].scope_spans[1].spans[7].trace_id`.
    pub fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in self.path.iter().rev() {
            if !s.is_empty() {
                s.push('.');
            }
            match seg {
                Seg::Field(f) => s.push_str(f),
                Seg::Index(f, i) => {
                    s.push_str(f);
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        if s.is_empty() {
            s.push_str("(request)");
        }
        s
    }
}

pub(crate) fn wire_type_name(wt: u32) -> &'static str {
    match wt {
        0 => "varint",
        1 => "fixed64",
        2 => "length-delimited",
        3 => "start-group",
        4 => "end-group",
        5 => "fixed32",
        _ => "invalid",
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Truncated { what } => write!(f, "message ends in the middle of a {what}"),
            Kind::VarintTooLong => write!(f, "varint longer than 10 bytes or overflowing 64 bits"),
            Kind::LengthPastEnd { len, remaining } => write!(
                f,
                "length {len} runs past the end of the enclosing message ({remaining} bytes left)"
            ),
            Kind::FieldNumberZero => write!(f, "field number 0 is not valid"),
            Kind::KeyTooLarge(k) => write!(f, "field key {k} exceeds 32 bits"),
            Kind::BadWireType(wt) => write!(
                f,
                "wire type {wt} ({}) is not supported",
                wire_type_name(*wt)
            ),
            Kind::WrongWireType { expected, got } => write!(
                f,
                "wrong wire type: expected {} ({expected}), got {} ({got})",
                wire_type_name(*expected),
                wire_type_name(*got)
            ),
            Kind::BadIdLength { len, expected } => {
                write!(f, "id is {len} bytes; it must be empty or {expected} bytes")
            }
            Kind::Nested(d) => write!(f, "invalid nested message: {d}"),
            Kind::Internal(d) => write!(f, "internal decoder error: {d}"),
            Kind::TooLarge { len, max } => {
                write!(
                    f,
                    "request is {len} bytes; the decoder accepts at most {max}"
                )
            }
        }
    }
}

/// A cursor over one message's bytes. `base` is the absolute offset of `buf[0]` in the request,
/// so errors can name a byte position.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    #[inline(always)]
    pub fn has_more(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// The absolute offset of this message's first byte in the request.
    #[inline(always)]
    pub fn base(&self) -> usize {
        self.base
    }

    #[inline(always)]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// All bytes of this message.
    #[inline(always)]
    pub fn all(&self) -> &'a [u8] {
        self.buf
    }

    /// The bytes of this message from `start` to the current position.
    #[inline(always)]
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.buf[start..self.pos]
    }

    #[cold]
    fn fail(&self, kind: Kind) -> Error {
        err(kind, Some(self.base + self.pos))
    }

    #[inline(always)]
    pub fn varint(&mut self) -> R<u64> {
        // One- and two-byte varints (tags, lengths of attributes and spans) are the vast
        // majority: keep them inline.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(b as u64);
            }
            if let Some(&b2) = self.buf.get(self.pos + 1)
                && b2 < 0x80
            {
                self.pos += 2;
                return Ok((b & 0x7f) as u64 | (b2 as u64) << 7);
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> R<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos + i) else {
                return Err(self.fail(Kind::Truncated { what: "varint" }));
            };
            // The 10th byte may carry only the top bit of a u64 (prost rejects more, too).
            if i == 9 && b > 1 {
                return Err(self.fail(Kind::VarintTooLong));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        Err(self.fail(Kind::VarintTooLong))
    }

    /// Reads a field key; returns `(key, wire type)` with key = `(field << 3) | wire_type`.
    #[inline(always)]
    pub fn key(&mut self) -> R<u32> {
        let k = self.varint()?;
        if k > u32::MAX as u64 {
            return Err(self.fail(Kind::KeyTooLarge(k)));
        }
        if k < 8 {
            return Err(self.fail(Kind::FieldNumberZero));
        }
        Ok(k as u32)
    }

    #[inline(always)]
    pub fn fixed64(&mut self) -> R<u64> {
        match self.buf.get(self.pos..self.pos + 8) {
            Some(b) => {
                self.pos += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(u64::from_le_bytes(a))
            }
            None => Err(self.fail(Kind::Truncated { what: "fixed64" })),
        }
    }

    #[inline(always)]
    pub fn fixed32(&mut self) -> R<u32> {
        match self.buf.get(self.pos..self.pos + 4) {
            Some(b) => {
                self.pos += 4;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Ok(u32::from_le_bytes(a))
            }
            None => Err(self.fail(Kind::Truncated { what: "fixed32" })),
        }
    }

    #[inline(always)]
    pub fn f64(&mut self) -> R<f64> {
        self.fixed64().map(f64::from_bits)
    }

    /// A length-delimited field's payload.
    #[inline(always)]
    pub fn bytes(&mut self) -> R<&'a [u8]> {
        let len = self.varint()?;
        let remaining = self.buf.len() - self.pos;
        if len > remaining as u64 {
            return Err(self.fail(Kind::LengthPastEnd { len, remaining }));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// A length-delimited field as a sub-reader (an embedded message or a packed array).
    #[inline(always)]
    pub fn message(&mut self) -> R<Reader<'a>> {
        let b = self.bytes()?;
        Ok(Reader {
            buf: b,
            pos: 0,
            base: self.base + self.pos - b.len(),
        })
    }

    /// Skips a field this decoder does not read, for forward compatibility. `fields` maps a
    /// field number to its name and wire type if the message declares it: a declared field
    /// with the wrong wire type is an error, as it is for prost.
    #[inline(never)]
    pub fn skip(&mut self, key: u32, fields: Fields) -> R<()> {
        let wt = key & 7;
        if let Some((name, expected)) = fields(key >> 3) {
            // A known field whose wire type matched none of the caller's arms.
            return Err(field_err(Kind::WrongWireType { expected, got: wt }, name));
        }
        self.skip_value(wt)
    }

    pub fn skip_value(&mut self, wt: u32) -> R<()> {
        match wt {
            VARINT => self.varint().map(drop),
            I64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.fixed32().map(drop),
            other => Err(self.fail(Kind::BadWireType(other))),
        }
    }
}

/// A message's declared fields: number -> (name, wire type). Used only on the error path.
pub(crate) type Fields = fn(u32) -> Option<(&'static str, u32)>;

/// Decodes a zigzag-encoded sint32 the way prost does (low 32 bits of the varint).
#[inline(always)]
pub(crate) fn zigzag32(v: u64) -> i32 {
    let v = v as u32;
    ((v >> 1) as i32) ^ (-((v & 1) as i32))
}
