//! Array and kvlist `AnyValue`s are kept whole, as the protobuf bytes of the `AnyValue` (one
//! `Binary` cell per value, see [`crate::schema`]). This walks them once where the decoder
//! reads them, with what prost would check (wire format, wire types of known fields) plus:
//!
//! - a nesting bound, [`MAX_ANY_VALUE_DEPTH`] levels: deeper values are refused with an error
//!   naming the path (`...attributes[0].value.kvlist_value.values[2].value...`), never a
//!   stack overflow (the walk recurses at most that deep);
//! - strings that are not valid UTF-8 (keys and `string_value`s at any depth) are not an
//!   error: [`check`] reports them and [`repair`] writes a copy with each such string's
//!   invalid sequences replaced by U+FFFD, as everywhere else in the decoder.

use super::wire::{Ctx, Error, Kind, LEN, R, Reader, err};

/// The deepest `AnyValue` nesting accepted: an attribute value is level 1, the elements of an
/// array value (or the values of a kvlist value) level 2, and so on. Real telemetry rarely
/// goes past 5; the Collector itself sets no bound, but recursing without one lets a small
/// request exhaust the stack.
pub const MAX_ANY_VALUE_DEPTH: usize = 64;

#[cold]
fn too_deep() -> Error {
    err(
        Kind::Nested(format!(
            "AnyValue nested deeper than {MAX_ANY_VALUE_DEPTH} levels"
        )),
        None,
    )
}

/// Checks the encoded `AnyValue` in `r` (at nesting level 1). `Ok(true)`: some string in it
/// is not valid UTF-8; [`repair`] makes the stored copy.
pub(crate) fn check(r: Reader<'_>) -> R<bool> {
    let mut bad = false;
    any_value(r, 1, &mut bad)?;
    Ok(bad)
}

fn any_value(mut r: Reader<'_>, depth: usize, bad: &mut bool) -> R<()> {
    while r.has_more() {
        let k = r.key()?;
        if k == super::wire::key(1, LEN) {
            *bad |= std::str::from_utf8(r.bytes()?).is_err();
        } else if k == super::wire::key(5, LEN) {
            array(r.message()?, depth, bad).at("array_value")?;
        } else if k == super::wire::key(6, LEN) {
            kvlist(r.message()?, depth, bad).at("kvlist_value")?;
        } else {
            skip(&mut r, k, super::common::any_value_fields)?;
        }
    }
    Ok(())
}

/// Skips a field not walked into: a declared field must have its declared wire type (as in
/// prost); an unknown one is skipped whatever it is.
fn skip(r: &mut Reader<'_>, k: u32, fields: super::wire::Fields) -> R<()> {
    match fields(k >> 3) {
        Some((_, expected)) if expected != k & 7 => r.skip(k, fields),
        _ => r.skip_value(k & 7),
    }
}

fn values_field(f: u32) -> Option<(&'static str, u32)> {
    (f == 1).then_some(("values", LEN))
}

fn array(mut r: Reader<'_>, depth: usize, bad: &mut bool) -> R<()> {
    let mut i = 0u32;
    while r.has_more() {
        let k = r.key()?;
        if k == super::wire::key(1, LEN) {
            let m = r.message()?;
            if depth >= MAX_ANY_VALUE_DEPTH {
                return Err(too_deep()).at_idx("values", i);
            }
            any_value(m, depth + 1, bad).at_idx("values", i)?;
            i += 1;
        } else {
            skip(&mut r, k, values_field)?;
        }
    }
    Ok(())
}

fn kvlist(mut r: Reader<'_>, depth: usize, bad: &mut bool) -> R<()> {
    let mut i = 0u32;
    while r.has_more() {
        let k = r.key()?;
        if k == super::wire::key(1, LEN) {
            key_value(r.message()?, depth, bad).at_idx("values", i)?;
            i += 1;
        } else {
            skip(&mut r, k, values_field)?;
        }
    }
    Ok(())
}

fn key_value(mut r: Reader<'_>, depth: usize, bad: &mut bool) -> R<()> {
    while r.has_more() {
        let k = r.key()?;
        if k == super::wire::key(1, LEN) {
            *bad |= std::str::from_utf8(r.bytes()?).is_err();
        } else if k == super::wire::key(2, LEN) {
            let m = r.message()?;
            if depth >= MAX_ANY_VALUE_DEPTH {
                return Err(too_deep()).at("value");
            }
            any_value(m, depth + 1, bad).at("value")?;
        } else {
            skip(&mut r, k, super::common::key_value_fields)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Msg {
    AnyValue,
    Array,
    KvList,
    KeyValue,
}

/// What a length-delimited field of `m` holds: a string (`Some(None)`), a message of the given
/// type (`Some(Some(_))`), or neither (copied as it is).
fn child(m: Msg, field: u32) -> Option<Option<Msg>> {
    match (m, field) {
        (Msg::AnyValue, 1) | (Msg::KeyValue, 1) => Some(None),
        (Msg::AnyValue, 5) => Some(Some(Msg::Array)),
        (Msg::AnyValue, 6) => Some(Some(Msg::KvList)),
        (Msg::Array, 1) | (Msg::KeyValue, 2) => Some(Some(Msg::AnyValue)),
        (Msg::KvList, 1) => Some(Some(Msg::KeyValue)),
        _ => None,
    }
}

/// A copy of the encoded `AnyValue` `b` (which [`check`] accepted) with every string that is
/// not valid UTF-8 made valid (invalid sequences become U+FFFD). Returns the copy and how
/// many strings were replaced.
pub(crate) fn repair(b: &[u8]) -> R<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(b.len() + 16);
    let mut replaced = 0;
    rewrite(Msg::AnyValue, b, &mut out, &mut replaced)?;
    Ok((out, replaced))
}

fn rewrite(m: Msg, b: &[u8], out: &mut Vec<u8>, replaced: &mut usize) -> R<()> {
    let mut r = Reader::new(b, 0);
    while r.has_more() {
        let start = r.pos();
        let k = r.key()?;
        let what = if k & 7 == LEN { child(m, k >> 3) } else { None };
        match what {
            Some(None) => {
                let s = String::from_utf8_lossy(r.bytes()?);
                *replaced += matches!(s, std::borrow::Cow::Owned(_)) as usize;
                put_varint(out, u64::from(k));
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Some(Some(c)) => {
                let mut inner = Vec::new();
                rewrite(c, r.bytes()?, &mut inner, replaced)?;
                put_varint(out, u64::from(k));
                put_varint(out, inner.len() as u64);
                out.extend_from_slice(&inner);
            }
            None => {
                r.skip_value(k & 7)?;
                out.extend_from_slice(r.since(start));
            }
        }
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
