//! Protobuf wire primitives: encoded sizes and writers.
//!
//! Every `*_size` function returns the bytes a field takes including its tag, and 0 when prost
//! would skip the field (proto3 default), so the size pass and the write pass agree by
//! construction. Tags are passed pre-computed (`(field << 3) | wire_type`), all one byte except
//! the one two-byte tag sluice needs (`Span.flags`, field 16).

/// Bytes of `v` as a base-128 varint (prost's formula: branch-free).
#[inline(always)]
pub fn varint_len(v: u64) -> usize {
    ((((v | 1).leading_zeros() ^ 63) * 9 + 73) / 64) as usize
}

#[inline(always)]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let mut buf = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.extend_from_slice(&buf[..=n]);
}

/// A length-delimited field with a one-byte tag and a body of `len` bytes (always written:
/// messages in repeated fields, set oneofs, present optional messages).
#[inline(always)]
pub fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A string/bytes field: skipped when empty, as prost does for proto3 scalars.
#[inline(always)]
pub fn str_size(len: usize) -> usize {
    if len == 0 { 0 } else { len_field_size(len) }
}

/// An int32/enum/uint32/uint64 varint field, skipped when 0. int32 is sign-extended to 64
/// bits on the wire, so negative values take 10 bytes.
#[inline(always)]
pub fn varint_size(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + varint_len(v) }
}

#[inline(always)]
pub fn i32_wire(v: i32) -> u64 {
    v as i64 as u64
}

#[inline(always)]
pub fn zigzag32(v: i32) -> u64 {
    ((v << 1) ^ (v >> 31)) as u32 as u64
}

#[inline(always)]
pub fn fixed64_size(v: u64) -> usize {
    if v == 0 { 0 } else { 9 }
}

#[inline(always)]
pub fn fixed32_size(v: u32) -> usize {
    if v == 0 { 0 } else { 5 }
}

/// A plain (non-optional) double: prost skips it when `v == 0.0`, which includes -0.0.
#[inline(always)]
pub fn double_size(v: f64) -> usize {
    if v == 0.0 { 0 } else { 9 }
}

#[inline(always)]
pub fn put_len_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[inline(always)]
pub fn put_str(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_field(out, tag, bytes);
    }
}

#[inline(always)]
pub fn put_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    put_varint(out, len as u64);
}

#[inline(always)]
pub fn put_varint_field(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        out.push(tag);
        put_varint(out, v);
    }
}

#[inline(always)]
pub fn put_fixed64(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        put_fixed64_always(out, tag, v);
    }
}

#[inline(always)]
pub fn put_fixed64_always(out: &mut Vec<u8>, tag: u8, v: u64) {
    let mut buf = [0u8; 9];
    buf[0] = tag;
    buf[1..].copy_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&buf);
}

#[inline(always)]
pub fn put_fixed32(out: &mut Vec<u8>, tag: u8, v: u32) {
    if v != 0 {
        let mut buf = [0u8; 5];
        buf[0] = tag;
        buf[1..].copy_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&buf);
    }
}

#[inline(always)]
pub fn put_double(out: &mut Vec<u8>, tag: u8, v: f64) {
    if v != 0.0 {
        put_fixed64_always(out, tag, v.to_bits());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
        }
    }
}
