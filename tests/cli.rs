//! The `sluice` binary's command line: validate, components, and config errors as users see them.

use std::path::PathBuf;
use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn components_lists_every_kind() {
    let out = sluice().arg("components").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "receivers:",
        "processors:",
        "exporters:",
        "extensions:",
        "health_check",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[test]
fn validate_names_file_path_and_accepted_fields() {
    let bad = write(
        "bad.yaml",
        "extensions:\n  health_check:\n    endpointt: localhost:1\nservice:\n  extensions: [health_check]\n",
    );
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: extensions.health_check.endpointt: unknown field `endpointt`, expected one of `endpoint`, `path`"),
        "{err}"
    );
    assert!(
        err.contains("service.pipelines: at least one pipeline is required"),
        "{err}"
    );
}

#[test]
fn validate_names_a_missing_file() {
    let out = sluice()
        .args(["validate", "--config", "/nonexistent/sluice.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/sluice.yaml")
    );
}

#[test]
fn run_refuses_a_bad_config_with_the_same_message() {
    let bad = write("bad-run.yaml", "receivers: {nope: {}}\n");
    let out = sluice().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("receivers.nope: unknown receiver type \"nope\"")
    );
}
#[test]
fn validate_accepts_the_embedded_default() {
    let out = sluice().arg("validate").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}
