//! The fuzz corpus on every CI run, on stable: every file of `fuzz/corpus/<target>/` (inputs the
//! fuzzer kept for their coverage) and of `fuzz/regressions/<target>/` (inputs that once made a
//! target fail, kept after the fix) through the same entry point the cargo-fuzz target calls
//! (`sluice_engine::fuzzing`, `sluice::fuzzing`). Long fuzzing runs are `scripts/fuzz.sh`'s.
//!
//! `write_seed_corpus` (ignored) writes the seeds the corpus grew from; see `fuzz/README.md`.

use std::path::{Path, PathBuf};

use sluice_engine::Signal;
use sluice_engine::fuzzing;

/// A fuzz target's entry point.
type Entry = Box<dyn Fn(&[u8])>;

/// Every fuzz target, by the name of its folder, with its entry point.
fn targets() -> Vec<(&'static str, Entry)> {
    let registry = sluice::registry();
    vec![
        (
            "otlp_traces",
            Box::new(|d: &[u8]| fuzzing::otlp_protobuf(Signal::Traces, d)),
        ),
        (
            "otlp_metrics",
            Box::new(|d: &[u8]| fuzzing::otlp_protobuf(Signal::Metrics, d)),
        ),
        (
            "otlp_logs",
            Box::new(|d: &[u8]| fuzzing::otlp_protobuf(Signal::Logs, d)),
        ),
        ("otlp_json", Box::new(fuzzing::otlp_json)),
        ("flight_stream", Box::new(fuzzing::flight_stream)),
        (
            "config",
            Box::new(move |d: &[u8]| sluice::fuzzing::config(d, &registry)),
        ),
    ]
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Runs `kind`'s files of every target; returns how many ran, by target.
fn replay(kind: &str) -> Vec<(&'static str, usize)> {
    targets()
        .into_iter()
        .map(|(name, run)| {
            let inputs = files(&fuzz_dir().join(kind).join(name));
            for path in &inputs {
                let data = std::fs::read(path).expect("readable corpus file");
                // A failing input names its file: rerun it with `cargo +nightly fuzz run
                // <target> <file>` for the fuzzer's view.
                if let Err(panic) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&data)))
                {
                    let why = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(no message)");
                    panic!("{name}: {} fails: {why}", path.display());
                }
            }
            (name, inputs.len())
        })
        .collect()
}

#[test]
fn the_committed_corpus_passes_every_target() {
    let ran = replay("corpus");
    // Every target has a corpus: a folder renamed or emptied would silently test nothing.
    for (name, n) in &ran {
        assert!(*n >= 3, "fuzz/corpus/{name} has {n} inputs");
    }
}

#[test]
fn the_committed_crash_reproducers_stay_fixed() {
    replay("regressions");
}

/// Writes the seeds the fuzz corpus starts from into `fuzz/corpus/<target>/`: the OTLP/JSON
/// examples (as JSON, and as protobuf), generated valid requests of every signal, Flight
/// streams of them in each compression, and the shipped configs. Run after changing a format:
/// `cargo nextest run -p sluice --test fuzz_corpus --run-ignored only write_seed_corpus`,
/// then fuzz and minimize (`scripts/fuzz.sh`, `scripts/fuzz.sh --cmin`).
#[test]
#[ignore]
fn write_seed_corpus() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use sluice_engine::Payload;
    use sluice_engine::flight::{Compression, Encoder};
    use sluice_engine::otlp::testing::{
        arb_logs_request, arb_metrics_request, arb_traces_request, reference_logs,
        reference_metrics, reference_traces,
    };

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = fuzz_dir().join("corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };

    let mut payloads: Vec<(String, Payload)> = Vec::new();
    for (signal, file) in [
        (Signal::Traces, "trace.json"),
        (Signal::Metrics, "metrics.json"),
        (Signal::Logs, "logs.json"),
    ] {
        let json = std::fs::read(root.join("engine/testdata/otlp-examples").join(file)).unwrap();
        write("otlp_json", file, &json);
        let p = sluice_engine::otlp::decode_json(signal, &json).unwrap();
        payloads.push((format!("example-{file}"), p));
    }
    // A fixed seed: the same seeds every time this runs.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    for i in 0..8 {
        let t = arb_traces_request()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        payloads.push((format!("generated-{i}"), reference_traces(&t)));
        let m = arb_metrics_request()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        payloads.push((format!("generated-{i}"), reference_metrics(&m)));
        let l = arb_logs_request().new_tree(&mut runner).unwrap().current();
        payloads.push((format!("generated-{i}"), reference_logs(&l)));
    }
    for (name, p) in &payloads {
        let target = match p.signal() {
            Signal::Traces => "otlp_traces",
            Signal::Metrics => "otlp_metrics",
            Signal::Logs => "otlp_logs",
        };
        write(
            target,
            &format!("{name}.pb"),
            &sluice_engine::otlp::encode_to_vec(p),
        );
        if name.starts_with("generated") {
            let json = sluice_engine::otlp::encode_json(p).unwrap();
            write("otlp_json", &format!("{target}-{name}.json"), &json);
        }
    }
    // Flight: each payload alone in each compression, and runs of several on one stream (the
    // second and later payloads use the stream dictionaries the first ones set up).
    for (c, cname) in [
        (Compression::None, "none"),
        (Compression::Zstd, "zstd"),
        (Compression::Lz4, "lz4"),
    ] {
        for (i, chunk) in payloads.chunks(4).enumerate() {
            let mut encoder = Encoder::new(c);
            let mut messages = Vec::new();
            for (_, p) in chunk {
                encoder.encode(p, &mut messages).unwrap();
            }
            write(
                "flight_stream",
                &format!("{cname}-{i}.stream"),
                &fuzzing::flight_frame(&messages),
            );
        }
    }
    for dir in ["k8s/config", "benches/e2e"] {
        for path in files(&root.join(dir)) {
            if path.extension().is_some_and(|e| e == "yaml") {
                let name = format!(
                    "{}-{}",
                    dir.replace('/', "-"),
                    path.file_name().unwrap().to_string_lossy()
                );
                write("config", &name, &std::fs::read(&path).unwrap());
            }
        }
    }
    write(
        "config",
        "default.yaml",
        sluice_engine::config::DEFAULT_CONFIG.as_bytes(),
    );
}
