//! What the OTLP exporters' and receivers' body compression costs on the realistic 1,000-span
//! request (encoded protobuf, ~530 KB), for the backend sluice ships against the one it
//! replaced, side by side:
//!
//! - `gzip6_flate2`: gzip at level 6 through `flate2` as built in this workspace (tonic's gRPC
//!   gzip and the otlphttp exporter use it; level 6 is what tonic and grpc-go use). The
//!   workspace enables flate2's `zlib-rs` backend.
//! - `deflate6_miniz_oxide`: the same level through `miniz_oxide`, flate2's default backend
//!   (what sluice used before; gzip adds only a header and a CRC to this).
//! - `zstd3`: zstd at its default level 3, the other encoding the exporters offer.
//! - `gzip_libdeflate_equal_size`: gzip through libdeflate (`libdeflater`, C) at the lowest
//!   level whose output is no larger than zlib-rs's level 6 (issue 17 item 5: "at equal
//!   ratio"), and `gzip6_libdeflate` at the same nominal level. libdeflate compresses a whole
//!   buffer at once (no streaming), which is how the exporters compress a request anyway.
//! - the matching decompressions (what a receiver pays per request).
//!
//! The end-to-end gateway profile found deflate at ~48% of the gateway's CPU with miniz_oxide
//! (`otlp/jaeger` compresses with gzip by default, as the Collector's otlp exporter does).
//!
//! `cargo bench -p sluice-benches --bench compression -- --warm-up-time 2 --measurement-time 4`

use std::hint::black_box;
use std::io::{Read, Write};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::realistic_traces_request;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gzip6(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(body).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

fn gzip_libdeflate(compressor: &mut libdeflater::Compressor, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0; compressor.gzip_compress_bound(body.len())];
    let n = compressor
        .gzip_compress(body, &mut out)
        .expect("bound is enough");
    out.truncate(n);
    out
}

fn libdeflate_at(level: i32) -> libdeflater::Compressor {
    libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).expect("level 1..=12"))
}

fn bench(c: &mut Criterion) {
    let body = realistic_traces_request(1000).encode_to_vec();
    let gz = gzip6(&body);
    let deflated = miniz_oxide::deflate::compress_to_vec(&body, 6);
    let zst = zstd::encode_all(body.as_slice(), 3).expect("zstd");
    eprintln!(
        "body {} B; gzip6 (flate2) {} B, deflate6 (miniz_oxide) {} B, zstd3 {} B",
        body.len(),
        gz.len(),
        deflated.len(),
        zst.len()
    );
    // libdeflate's levels do not produce the sizes zlib's do: find the lowest level that is at
    // least as small as what the exporters send today, so the comparison is at equal ratio.
    let sizes: Vec<(i32, usize)> = (1..=12)
        .map(|level| {
            (
                level,
                gzip_libdeflate(&mut libdeflate_at(level), &body).len(),
            )
        })
        .collect();
    eprintln!("libdeflate gzip sizes by level: {sizes:?}");
    let equal_size_level = sizes
        .iter()
        .find(|(_, size)| *size <= gz.len())
        .map_or(12, |(level, _)| *level);
    eprintln!(
        "libdeflate level {equal_size_level} is the lowest no larger than zlib-rs level 6 ({} B)",
        gz.len()
    );
    let mut g = c.benchmark_group("compress_1000_span_request");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("gzip6_flate2", |b| b.iter(|| gzip6(black_box(&body))));
    g.bench_function("deflate6_miniz_oxide", |b| {
        b.iter(|| miniz_oxide::deflate::compress_to_vec(black_box(&body), 6))
    });
    g.bench_function("zstd3", |b| {
        b.iter(|| zstd::encode_all(black_box(body.as_slice()), 3).expect("zstd"))
    });
    let mut equal_size = libdeflate_at(equal_size_level);
    g.bench_function("gzip_libdeflate_equal_size", |b| {
        b.iter(|| gzip_libdeflate(&mut equal_size, black_box(&body)))
    });
    let mut level6 = libdeflate_at(6);
    g.bench_function("gzip6_libdeflate", |b| {
        b.iter(|| gzip_libdeflate(&mut level6, black_box(&body)))
    });
    g.finish();

    let mut g = c.benchmark_group("decompress_1000_span_request");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("gzip_flate2", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(body.len());
            flate2::read::GzDecoder::new(black_box(gz.as_slice()))
                .read_to_end(&mut out)
                .expect("gunzip");
            out
        })
    });
    g.bench_function("inflate_miniz_oxide", |b| {
        b.iter(|| miniz_oxide::inflate::decompress_to_vec(black_box(&deflated)).expect("inflate"))
    });
    g.bench_function("zstd", |b| {
        b.iter(|| zstd::decode_all(black_box(zst.as_slice())).expect("zstd"))
    });
    let mut decompressor = libdeflater::Decompressor::new();
    g.bench_function("gunzip_libdeflate", |b| {
        b.iter(|| {
            // A receiver knows the bound it allows (its size limit); the body's size here.
            let mut out = vec![0; body.len()];
            let n = decompressor
                .gzip_decompress(black_box(&gz), &mut out)
                .expect("gunzip");
            out.truncate(n);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
