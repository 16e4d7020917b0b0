//! `sluice-fake-imds`: the fake EC2 instance metadata service of
//! `sluice_k8s::testing::imds`, as a process, for the end-to-end tests.
//!
//! ```text
//! sluice-fake-imds [--mode v2|v2-required|v1-only|hang] [--listen 127.0.0.1:0]
//!                  [--region R] [--zone Z] [--instance-id I] [--instance-type T]
//!                  [--account-id A] [--image-id M] [--hostname H] [--delay-ms N]
//! ```
//!
//! Prints `listening http://ADDR` on one line once it serves, then serves until killed or until
//! its standard input closes (so it never outlives the test that started it).
//! `GET /_fake/requests` returns what it was asked, as JSON.

use std::process::ExitCode;
use std::time::Duration;

use sluice_k8s::testing::{FakeImds, FakeInstance, ImdsMode};
use tokio::io::AsyncReadExt;

fn usage(problem: &str) -> ExitCode {
    eprintln!("sluice-fake-imds: {problem}");
    eprintln!(
        "usage: sluice-fake-imds [--mode v2|v2-required|v1-only|hang] [--listen ADDR] [--region R] [--zone Z] [--instance-id I] [--instance-type T] [--account-id A] [--image-id M] [--hostname H] [--delay-ms N]"
    );
    ExitCode::FAILURE
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut mode = ImdsMode::V2Optional;
    let mut listen = "127.0.0.1:0".to_string();
    let mut instance = FakeInstance::default();
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            return usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--mode" => {
                mode = match value.as_str() {
                    "v2" => ImdsMode::V2Optional,
                    "v2-required" => ImdsMode::V2Required,
                    "v1-only" => ImdsMode::V1Only { token_status: 403 },
                    "hang" => ImdsMode::Hang,
                    other => return usage(&format!("unknown mode {other:?}")),
                }
            }
            "--listen" => listen = value,
            "--region" => instance.region = value,
            "--zone" => instance.availability_zone = value,
            "--instance-id" => instance.instance_id = value,
            "--instance-type" => instance.instance_type = value,
            "--account-id" => instance.account_id = value,
            "--image-id" => instance.image_id = value,
            "--hostname" => instance.hostname = value,
            "--delay-ms" => match value.parse() {
                Ok(ms) => delay = Duration::from_millis(ms),
                Err(_) => return usage(&format!("--delay-ms {value:?} is not a number")),
            },
            other => return usage(&format!("unknown flag {other:?}")),
        }
    }
    let fake = match FakeImds::start_on(&listen, mode, instance).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sluice-fake-imds: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    fake.set_delay(delay);
    println!("listening {}", fake.endpoint());
    // Serve until stdin closes (the test's end) or the process is killed.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    ExitCode::SUCCESS
}
