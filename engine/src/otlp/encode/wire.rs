//! Protobuf wire primitives: encoded sizes and writers.
//!
//! Every `*_size` function returns the bytes a field takes including its tag, and 0 when prost
//! would skip the field (proto3 default), so the size pass and the write pass agree by
//! construction. Tags are passed pre-computed (`(field << 3) | wire_type`), all one byte except
//! the one two-byte tag sluice needs (`Span.flags`, field 16).

use std::mem::MaybeUninit;

/// Spare bytes an [`Out`] buffer has beyond the sized total, so that [`Out::put_within`] can
/// move fixed-size blocks up to the very end.
pub const SLACK: usize = 64;

/// A write cursor over a vector's spare capacity, sized exactly by the size pass.
///
/// Why not `Vec::push`/`extend_from_slice`: every byte store may alias the vector's own
/// length and pointer, so the compiler reloads them after each write, and small copies go
/// through a libc `memmove` call. Here the cursor lives in registers and short copies are
/// inlined. Indexing stays bounds-checked: a size-pass bug panics instead of corrupting memory.
pub struct Out<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    pos: usize,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [MaybeUninit<u8>]) -> Self {
        Out { buf, pos: 0 }
    }

    /// A cursor over the same buffer at the same position, to be a local (kept in registers)
    /// in a hot loop; hand it back with [`Out::resume`].
    #[inline(always)]
    pub fn local(&mut self) -> Out<'_> {
        Out {
            buf: &mut *self.buf,
            pos: self.pos,
        }
    }

    #[inline(always)]
    pub fn resume(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// Bytes written so far; all of `buf[..written()]` is initialized.
    pub fn written(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    pub fn push(&mut self, b: u8) {
        self.buf[self.pos] = MaybeUninit::new(b);
        self.pos += 1;
    }

    /// Copies `src[start..start + len]`, as one fixed `W`-byte move when `len <= W` and both
    /// `src` and the buffer have `W` bytes from there: no length branches, no `memmove` call.
    /// The bytes moved past `len` are junk, and harmless: the writer is sequential and the size
    /// pass makes it cover every byte up to the sized total, so later writes overwrite them,
    /// and junk past the total lies in the vector's spare capacity, outside its length (the
    /// buffer is sized with [`SLACK`] bytes beyond the total for this).
    #[inline(always)]
    pub fn put_within<const W: usize>(&mut self, src: &[u8], start: usize, len: usize) {
        if len <= W
            && let Some(from) = src.get(start..).and_then(|s| s.first_chunk::<W>())
            && let Some(to) = self
                .buf
                .get_mut(self.pos..)
                .and_then(|d| d.first_chunk_mut::<W>())
        {
            to.write_copy_of_slice(from);
            self.pos += len;
        } else {
            self.put(&src[start..start + len]);
        }
    }

    /// A fixed-size store (headers built in a register): one bounds check, no length branches.
    #[inline(always)]
    pub fn put_array<const N: usize>(&mut self, src: [u8; N]) {
        self.buf[self.pos..self.pos + N].write_copy_of_slice(&src);
        self.pos += N;
    }

    #[inline(always)]
    pub fn put(&mut self, src: &[u8]) {
        let n = src.len();
        let dst = &mut self.buf[self.pos..self.pos + n];
        // Short strings (keys, names, ids) dominate: two overlapping fixed-size moves instead
        // of a memmove call, reading only within `src`.
        if (8..=16).contains(&n) {
            dst[..8].write_copy_of_slice(&src[..8]);
            dst[n - 8..].write_copy_of_slice(&src[n - 8..]);
        } else if (4..8).contains(&n) {
            dst[..4].write_copy_of_slice(&src[..4]);
            dst[n - 4..].write_copy_of_slice(&src[n - 4..]);
        } else if n > 0 && n < 4 {
            // 1 to 3 bytes without a loop (LLVM turns a copy loop into a `memmove` call).
            dst[0] = MaybeUninit::new(src[0]);
            dst[n / 2] = MaybeUninit::new(src[n / 2]);
            dst[n - 1] = MaybeUninit::new(src[n - 1]);
        } else if n > 16 {
            dst.write_copy_of_slice(src);
        }
        self.pos += n;
    }
}

/// Bytes of `v` as a base-128 varint (prost's formula: branch-free).
#[inline(always)]
pub fn varint_len(v: u64) -> usize {
    ((((v | 1).leading_zeros() ^ 63) * 9 + 73) / 64) as usize
}

#[inline(always)]
pub fn put_varint(out: &mut Out<'_>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    // Byte by byte into the buffer: building the varint on the stack and copying it out
    // costs a `memmove` call per multi-byte length.
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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
pub fn put_len_field(out: &mut Out<'_>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.put(bytes);
}

#[inline(always)]
pub fn put_str(out: &mut Out<'_>, tag: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_field(out, tag, bytes);
    }
}

#[inline(always)]
pub fn put_header(out: &mut Out<'_>, tag: u8, len: usize) {
    out.push(tag);
    put_varint(out, len as u64);
}

#[inline(always)]
pub fn put_varint_field(out: &mut Out<'_>, tag: u8, v: u64) {
    if v != 0 {
        out.push(tag);
        put_varint(out, v);
    }
}

#[inline(always)]
pub fn put_fixed64(out: &mut Out<'_>, tag: u8, v: u64) {
    if v != 0 {
        put_fixed64_always(out, tag, v);
    }
}

#[inline(always)]
pub fn put_fixed64_always(out: &mut Out<'_>, tag: u8, v: u64) {
    let mut buf = [0u8; 9];
    buf[0] = tag;
    buf[1..].copy_from_slice(&v.to_le_bytes());
    out.put(&buf);
}

#[inline(always)]
pub fn put_fixed32(out: &mut Out<'_>, tag: u8, v: u32) {
    if v != 0 {
        let mut buf = [0u8; 5];
        buf[0] = tag;
        buf[1..].copy_from_slice(&v.to_le_bytes());
        out.put(&buf);
    }
}

#[inline(always)]
pub fn put_double(out: &mut Out<'_>, tag: u8, v: f64) {
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
            let mut buf = [MaybeUninit::uninit(); 10];
            let mut out = Out::new(&mut buf);
            put_varint(&mut out, v);
            assert_eq!(out.written(), varint_len(v), "{v}");
            assert_eq!(out.written(), prost::encoding::encoded_len_varint(v));
        }
    }
}
