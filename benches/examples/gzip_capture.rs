//! gzip of real exported requests at several levels, as the `otlp` exporter compresses them
//! (flate2 on zlib-rs, as this workspace builds it): total bytes out and time per pass.
//! `benches/peer/gzip_go.go` does the same with Go's `compress/gzip` (grpc-go's gzip
//! compressor, which the Collector's `otlp` exporter uses), on the same file.
//!
//! ```sh
//! cargo build --release -p sluice-benches --example gzip_capture
//! target/release/examples/gzip_capture FILE [LEVELS [ROUNDS]]   # e.g. CAPTURE 6,7 3
//! ```
//!
//! FILE is a `file` exporter capture (`format: proto`: 4-byte big-endian length, then a
//! request), e.g. the gateway's `otlp/jaeger` output with a `file` exporter beside it
//! (BENCHMARKS.md, "gzip: sluice against the Collector's Go gzip").

use std::io::Write;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let path = argv
        .first()
        .expect("usage: gzip_capture FILE [LEVELS [ROUNDS]]");
    let levels: Vec<u32> = argv
        .get(1)
        .map_or("1,6,9", String::as_str)
        .split(',')
        .map(|l| l.parse().expect("levels: comma-separated 0..=9"))
        .collect();
    let rounds: usize = argv
        .get(2)
        .map_or(3, |r| r.parse().expect("rounds: a number"));
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let requests = sluice_benches::capture_requests(&data);
    let total: usize = requests.iter().map(|r| r.len()).sum();
    println!("{} requests, {total} B", requests.len());
    for _ in 0..rounds {
        for &level in &levels {
            let t = Instant::now();
            let mut out = 0;
            for r in &requests {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(r.len() / 4),
                    flate2::Compression::new(level),
                );
                e.write_all(r).expect("in memory");
                out += e.finish().expect("in memory").len();
            }
            let elapsed = t.elapsed().as_secs_f64();
            println!(
                "zlib-rs level {level}: {out} B ({:.4} of the input), {:.1} ms",
                out as f64 / total as f64,
                elapsed * 1e3
            );
        }
    }
}
