//! The config loader's fuzz entry point (the `config` target in `fuzz/`, and
//! `tests/fuzz_corpus.rs`, which replays the committed corpus on every CI run). The decoders'
//! entry points are in `sluice_engine::fuzzing`.

use sluice_engine::config::{self, Registry, Source};

/// What `sluice validate` does with config text: parse the YAML, merge the sources, expand
/// `${env:VAR}`, and check every component's config against `registry`. `data` is split at
/// NUL bytes into up to four sources (as several `--config` flags), so merging is fuzzed too;
/// text that is not UTF-8 is skipped (a config file that is not UTF-8 cannot be read).
///
/// Checked beyond "no panic": the load is deterministic (a second load gives the same result),
/// every error says what is wrong, and a valid config's pipelines name only components it
/// defines.
pub fn config(data: &[u8], registry: &Registry) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources: Vec<Source> = text
        .splitn(4, '\0')
        .enumerate()
        .map(|(i, text)| Source {
            name: format!("fuzz-{i}.yaml"),
            text: text.to_string(),
        })
        .collect();
    // Some variables set (to a value a config could use), some not: both paths of `${env:VAR}`.
    let env = |name: &str| match name.len() % 3 {
        0 => None,
        1 => Some("4317".to_string()),
        _ => Some(format!("value-of-{name}")),
    };
    let first = describe(config::load(&sources, &env, registry));
    let second = describe(config::load(&sources, &env, registry));
    assert_eq!(first, second, "loading the same config twice differs");
}

/// A loaded config's outline (or its errors), checked on the way.
fn describe(loaded: Result<config::Config, Vec<sluice_engine::component::ConfigError>>) -> String {
    match loaded {
        Ok(c) => {
            for (id, p) in &c.pipelines {
                let kinds = [
                    (&p.receivers, sluice_engine::component::Kind::Receiver),
                    (&p.processors, sluice_engine::component::Kind::Processor),
                    (&p.exporters, sluice_engine::component::Kind::Exporter),
                    (&p.connectors_in, sluice_engine::component::Kind::Connector),
                    (&p.connectors_out, sluice_engine::component::Kind::Connector),
                ];
                for (ids, kind) in kinds {
                    for component in ids {
                        assert!(
                            c.components.contains_key(&(kind, component.clone())),
                            "pipeline {id:?} names {kind:?} {component:?}, which the config does not define"
                        );
                    }
                }
            }
            format!("{c:?}")
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal without an error");
            for e in &errors {
                assert!(
                    !e.message.trim().is_empty(),
                    "an error without a message: {e:?}"
                );
            }
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}
