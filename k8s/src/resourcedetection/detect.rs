//! What every detector shares: the environment it reads (variables and files, under a root so
//! tests can give it a made-up machine), its result, its errors, and the dispatch over the four
//! detectors.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::time::Instant;

use super::config::Checked;
use super::ec2::Ec2Detector;
use super::eks::EksDetector;
use super::env::EnvDetector;
use super::imds::ImdsClient;
use super::system::SystemDetector;
use super::{DetectedResource, config::DetectorKind};
use crate::VarLookup;

/// The schema URL the Collector's ec2, eks and system detectors report (semantic conventions
/// 1.6.1, the version their attribute names come from).
pub const SEMCONV_SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.6.1";

/// The machine as a detector sees it: environment variables, files below `root` (`/` in
/// production) and, on the real machine, the system's resolver.
#[derive(Clone)]
pub struct HostEnvironment {
    vars: VarLookup,
    root: PathBuf,
    system_resolver: bool,
}

impl std::fmt::Debug for HostEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEnvironment")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl HostEnvironment {
    /// This process's environment and file system.
    pub fn process() -> Self {
        HostEnvironment {
            vars: Arc::new(|name| std::env::var(name).ok()),
            root: PathBuf::from("/"),
            system_resolver: true,
        }
    }

    /// Made-up variables and a root directory, for tests; no resolver (a made-up hostname must
    /// not go out to DNS) unless [`Self::with_system_resolver`].
    pub fn new(
        vars: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        root: impl Into<PathBuf>,
    ) -> Self {
        HostEnvironment {
            vars: Arc::new(vars),
            root: root.into(),
            system_resolver: false,
        }
    }

    pub fn with_system_resolver(mut self) -> Self {
        self.system_resolver = true;
        self
    }

    /// Only these variables, and a root with nothing in it.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests(vars: &[(&str, &str)]) -> Self {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HostEnvironment::new(
            move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            "/nonexistent/sluice-test-root",
        )
    }

    pub fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name)
    }

    /// An absolute path of the machine (`/etc/hosts`) under this environment's root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Whether hostnames may be resolved (DNS, the hosts file through the C library).
    pub fn uses_system_resolver(&self) -> bool {
        self.system_resolver
    }
}

/// Why a detector failed. The variant is the `error_type` label of
/// `otelcol_resourcedetection_detector_results`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// Input the detector reads is malformed (`OTEL_RESOURCE_ATTRIBUTES`).
    #[error("{0}")]
    InvalidInput(String),
    /// A service could not be reached (connection refused, no answer in time).
    #[error("{0}")]
    Unreachable(String),
    /// A service answered with an error status.
    #[error("{0}")]
    Status(String),
    /// A service answered with something that is not what it documents.
    #[error("{0}")]
    InvalidResponse(String),
    /// A local file or system call failed.
    #[error("{0}")]
    Io(String),
    /// The detection deadline (`timeout`) passed.
    #[error("{0}")]
    Timeout(String),
    /// What is asked for needs something sluice does not do.
    #[error("{0}")]
    Unsupported(String),
}

impl DetectError {
    pub fn error_type(&self) -> &'static str {
        match self {
            DetectError::InvalidInput(_) => "invalid_input",
            DetectError::Unreachable(_) => "unreachable",
            DetectError::Status(_) => "http_status",
            DetectError::InvalidResponse(_) => "invalid_response",
            DetectError::Io(_) => "io",
            DetectError::Timeout(_) => "timeout",
            DetectError::Unsupported(_) => "unsupported",
        }
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: &str) -> DetectError {
        let wrap = |m: String| format!("{context}: {m}");
        match self {
            DetectError::InvalidInput(m) => DetectError::InvalidInput(wrap(m)),
            DetectError::Unreachable(m) => DetectError::Unreachable(wrap(m)),
            DetectError::Status(m) => DetectError::Status(wrap(m)),
            DetectError::InvalidResponse(m) => DetectError::InvalidResponse(wrap(m)),
            DetectError::Io(m) => DetectError::Io(wrap(m)),
            DetectError::Timeout(m) => DetectError::Timeout(wrap(m)),
            DetectError::Unsupported(m) => DetectError::Unsupported(wrap(m)),
        }
    }
}

/// How long past the deadline [`by_deadline`] lets work finish: work that watches the deadline
/// itself (the IMDS client) ends by then with its own, more telling error.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(200);

/// `work`, or a timeout error if `deadline` passes first; errors get `what: ` in front.
pub async fn by_deadline<T>(
    deadline: Instant,
    what: &str,
    work: impl Future<Output = Result<T, DetectError>>,
) -> Result<T, DetectError> {
    match tokio::time::timeout_at(deadline + DEADLINE_SLACK, work).await {
        Ok(r) => r.map_err(|e| e.context(what)),
        Err(_) => Err(DetectError::Timeout(format!(
            "{what}: no answer before the detection timeout"
        ))),
    }
}

/// One configured detector, ready to run (any number of times: at start and on every refresh).
pub enum Detector {
    Env(EnvDetector),
    System(SystemDetector),
    Ec2(Ec2Detector),
    Eks(EksDetector),
}

impl Detector {
    /// The detectors of a checked config, in its order.
    pub fn all(config: &Checked, host: &HostEnvironment) -> Vec<(DetectorKind, Arc<Detector>)> {
        let imds_client = |max_attempts, max_backoff| {
            Arc::new(ImdsClient::from_environment(
                host,
                max_attempts,
                max_backoff,
            ))
        };
        let raw = &config.raw;
        config
            .detectors
            .iter()
            .map(|&kind| {
                let d = match kind {
                    DetectorKind::Env => Detector::Env(EnvDetector {
                        filter: raw.env.attributes.clone(),
                    }),
                    DetectorKind::System => Detector::System(SystemDetector {
                        hostname_sources: config.hostname_sources.clone(),
                        attributes: config.system_attributes.clone(),
                    }),
                    DetectorKind::Ec2 => Detector::Ec2(Ec2Detector {
                        imds: imds_client(raw.ec2.max_attempts, raw.ec2.max_backoff),
                        attributes: config.ec2_attributes.clone(),
                        fail_on_missing_metadata: raw.fail_on_missing_metadata
                            || raw.ec2.fail_on_missing_metadata,
                    }),
                    DetectorKind::Eks => Detector::Eks(EksDetector {
                        imds: imds_client(raw.eks.max_attempts, raw.eks.max_backoff),
                        attributes: config.eks_attributes.clone(),
                        node_from_env_var: raw.eks.node_from_env_var.clone(),
                    }),
                };
                (kind, Arc::new(d))
            })
            .collect()
    }

    /// Runs the detector once. Every wait inside ends by `deadline`.
    pub async fn detect(
        &self,
        host: &HostEnvironment,
        deadline: Instant,
    ) -> Result<DetectedResource, DetectError> {
        match self {
            Detector::Env(d) => d.detect(host),
            Detector::System(d) => d.detect(host, deadline).await,
            Detector::Ec2(d) => d.detect(deadline).await,
            Detector::Eks(d) => d.detect(host, deadline).await,
        }
    }
}
