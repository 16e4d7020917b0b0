//! An encoded OTLP request as the exporters send it: slices of bytes written one after the
//! other, never joined into one buffer.
//!
//! Why: a batch of requests forwarded without decoding ([`sluice_engine::payload::WireForm`])
//! is a list of byte ranges of the request bodies it was received in. Joining them into one
//! contiguous buffer (and tonic's codec copying that again into its encode buffer) made two
//! copies of every request in flight — ~2.5 MB each for a batch of 8,192 spans, times
//! `num_consumers` — that the memory account never saw (BENCHMARKS.md, "Sending without
//! copying"). Sent uncompressed, the slices go to HTTP/2 as data frames of their own; compressed,
//! the compressor reads them in turn and its output is the only new buffer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// An encoded OTLP request (protobuf or JSON): its bytes, in order, as slices that share the
/// payload's buffers where they can, and their total length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtlpRequest {
    slices: Vec<Bytes>,
    len: usize,
}

impl OtlpRequest {
    /// The request made of `slices`, in order (empty ones dropped).
    pub fn from_slices(slices: Vec<Bytes>) -> Self {
        let slices: Vec<Bytes> = slices.into_iter().filter(|s| !s.is_empty()).collect();
        let len = slices.iter().map(Bytes::len).sum();
        OtlpRequest { slices, len }
    }

    /// Bytes of the request (uncompressed): what `max_request_size` limits.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn slices(&self) -> &[Bytes] {
        &self.slices
    }

    /// The request's bytes in one buffer: uncopied when it is one slice, else copied.
    pub fn to_bytes(&self) -> Bytes {
        match self.slices.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }
}

impl From<Bytes> for OtlpRequest {
    fn from(bytes: Bytes) -> Self {
        OtlpRequest::from_slices(vec![bytes])
    }
}

/// A compression codec and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip(u32),
    Zstd(i32),
}

/// `slices` compressed into one buffer that starts with `reserve` bytes left for the caller
/// (zeroes: room for a gRPC message prefix). The compressor reads the slices in turn; the
/// output is the only buffer made.
pub(crate) fn compress(codec: Codec, slices: &[Bytes], reserve: usize) -> std::io::Result<Vec<u8>> {
    let len: usize = slices.iter().map(Bytes::len).sum();
    // OTLP protobuf compresses 4-10×: a quarter is room for nearly every request at once.
    let mut out = Vec::with_capacity(reserve + len / 4 + 64);
    out.resize(reserve, 0);
    match codec {
        Codec::Gzip(level) => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            for s in slices {
                e.write_all(s)?;
            }
            e.finish()
        }
        Codec::Zstd(level) => {
            let mut e = zstd::stream::write::Encoder::new(out, level)?;
            for s in slices {
                e.write_all(s)?;
            }
            e.finish()
        }
    }
}

/// A request body of byte slices, each sent as a data frame of its own: what HTTP/2 (h2)
/// and HTTP/1 (hyper) write from without copying them first.
///
/// Runs of small slices are joined (copied) into frames of up to [`JOINED_MAX`] bytes: h2
/// writes each data frame with a system call of its own, and a batch of 100-span requests is
/// ~80 slices of ~30 KB — sent one by one they cost more CPU than the copy they avoid
/// (BENCHMARKS.md, "Sending without copying"). Slices of [`JOIN_BELOW`] bytes or more go
/// uncopied.
#[derive(Debug, Default)]
pub(crate) struct SlicesBody {
    slices: VecDeque<Bytes>,
    remaining: u64,
}

/// Slices shorter than this are joined with their small neighbours.
const JOIN_BELOW: usize = 64 * 1024;
/// The most bytes joined into one frame.
const JOINED_MAX: usize = 256 * 1024;

impl SlicesBody {
    pub(crate) fn new(slices: impl IntoIterator<Item = Bytes>) -> Self {
        let mut out: VecDeque<Bytes> = VecDeque::new();
        let mut small: Vec<Bytes> = Vec::new();
        let mut small_len = 0;
        let flush = |small: &mut Vec<Bytes>, out: &mut VecDeque<Bytes>| match small.len() {
            0 => {}
            1 => out.extend(small.pop()),
            _ => {
                let mut joined = Vec::with_capacity(small.iter().map(Bytes::len).sum());
                for s in small.drain(..) {
                    joined.extend_from_slice(&s);
                }
                out.push_back(Bytes::from(joined));
            }
        };
        for s in slices {
            if s.is_empty() {
                continue;
            }
            if s.len() >= JOIN_BELOW {
                flush(&mut small, &mut out);
                small_len = 0;
                out.push_back(s);
                continue;
            }
            small_len += s.len();
            small.push(s);
            if small_len >= JOINED_MAX {
                flush(&mut small, &mut out);
                small_len = 0;
            }
        }
        flush(&mut small, &mut out);
        let remaining = out.iter().map(|s| s.len() as u64).sum();
        SlicesBody {
            slices: out,
            remaining,
        }
    }
}

impl http_body::Body for SlicesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.slices.pop_front().map(|s| {
            this.remaining -= s.len() as u64;
            Ok(Frame::data(s))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.slices.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use std::io::Read;

    fn slices(parts: &[Vec<u8>]) -> Vec<Bytes> {
        parts.iter().cloned().map(Bytes::from).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the slicing, the request is its slices' bytes in order, the body yields
        /// exactly them (its size hint exact all along), and gzip and zstd decompress to them.
        #[test]
        fn a_sliced_request_is_its_bytes_in_order(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            reserve in 0usize..6,
        ) {
            let whole: Vec<u8> = parts.concat();
            let request = OtlpRequest::from_slices(slices(&parts));
            prop_assert_eq!(request.len(), whole.len());
            prop_assert_eq!(&request.to_bytes()[..], &whole[..]);
            prop_assert!(request.slices().iter().all(|s| !s.is_empty()));

            let body = SlicesBody::new(request.slices().iter().cloned());
            prop_assert_eq!(http_body::Body::size_hint(&body).exact(), Some(whole.len() as u64));
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let collected = rt.block_on(body.collect()).unwrap().to_bytes();
            prop_assert_eq!(&collected[..], &whole[..]);

            let gz = compress(Codec::Gzip(6), request.slices(), reserve).unwrap();
            prop_assert!(gz[..reserve].iter().all(|&b| b == 0));
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[reserve..]).read_to_end(&mut back).unwrap();
            prop_assert_eq!(&back, &whole);

            let zs = compress(Codec::Zstd(3), request.slices(), reserve).unwrap();
            prop_assert_eq!(zstd::decode_all(&zs[reserve..]).unwrap(), whole);
        }
    }

    /// Small slices are sent joined into few frames; large ones as they are, uncopied.
    #[test]
    fn small_slices_are_joined_and_large_ones_sent_uncopied() {
        let small: Vec<Bytes> = (0..80u8).map(|i| Bytes::from(vec![i; 30_000])).collect();
        let large = Bytes::from(vec![7u8; 150_000]);
        let mut all = vec![Bytes::from_static(b"\0\0\0\0\x05")];
        all.extend(small.iter().take(40).cloned());
        all.push(large.clone());
        all.extend(small.iter().skip(40).cloned());
        let whole: Vec<u8> = all.iter().flat_map(|s| s.to_vec()).collect();
        let body = SlicesBody::new(all);
        let frames: Vec<Bytes> = body.slices.iter().cloned().collect();
        assert!(frames.len() <= 12, "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.len() <= JOINED_MAX + 30_000));
        assert!(
            frames.iter().any(|f| f.as_ptr() == large.as_ptr()),
            "the large slice is sent as it is"
        );
        assert_eq!(frames.concat(), whole);
    }
}
