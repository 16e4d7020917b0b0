//! Running the detectors: all at once, each retrying with the Collector's backoff until the
//! deadline (`timeout` after the run began), results merged in configured order; once at
//! start, then every `refresh_interval`. One provider per `resourcedetection` id, shared by
//! every pipeline that lists it, as the Collector's factory shares one `ResourceProvider` per
//! component id.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sluice_engine::component::ComponentId;
use sluice_engine::telemetry::{Gauge, Telemetry};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::apply::{DetectedResource, ResourceMerge};
use super::config::{Checked, DetectorKind};
use super::detect::{DetectError, Detector, HostEnvironment};
use super::imds::unit_random;

/// The Collector's retry backoff for a failing detector (`cenkalti/backoff`: 1 s initial
/// interval, ×2, randomization factor 1.5, at most 60 s).
const INITIAL_RETRY: Duration = Duration::from_secs(1);
const RETRY_MULTIPLIER: f64 = 2.0;
const RETRY_RANDOMIZATION: f64 = 1.5;
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// A detector bounds its own waits by the deadline; this catches one that does not.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Buckets of `otelcol_resourcedetection_detector_duration_seconds`.
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The outcome of one run of every detector.
#[derive(Debug, Default)]
pub struct DetectionRun {
    pub merged: DetectedResource,
    pub failures: Vec<(DetectorKind, DetectError)>,
}

impl DetectionRun {
    fn failure_message(&self) -> String {
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|(k, e)| format!("{}: {e}", k.name()))
            .collect();
        parts.join("; ")
    }
}

pub struct Provider {
    id: String,
    host: HostEnvironment,
    detectors: Vec<(DetectorKind, Arc<Detector>)>,
    timeout: Duration,
    refresh_interval: Duration,
    override_existing: bool,
    current: RwLock<Arc<ResourceMerge>>,
    /// The first detection, run by whichever pipeline's processor starts first.
    first: tokio::sync::OnceCell<Result<(), String>>,
    refresher: Mutex<Option<JoinHandle<()>>>,
    telemetry: Telemetry,
    attributes_detected: Gauge,
}

impl Provider {
    pub fn new(
        id: &ComponentId,
        config: &Checked,
        host: HostEnvironment,
        telemetry: &Telemetry,
    ) -> Arc<Provider> {
        let id = id.to_string();
        let attributes_detected = telemetry.gauge(
            "otelcol_resourcedetection_attributes_detected",
            "Number of attributes in the currently detected resource",
            &[("processor", id.as_str())],
        );
        Arc::new(Provider {
            detectors: Detector::all(config, &host),
            host,
            timeout: config.raw.timeout,
            refresh_interval: config.raw.refresh_interval,
            override_existing: config.raw.override_existing,
            current: RwLock::new(Arc::new(ResourceMerge::new(
                DetectedResource::default(),
                config.raw.override_existing,
            ))),
            first: tokio::sync::OnceCell::new(),
            refresher: Mutex::new(None),
            telemetry: telemetry.clone(),
            attributes_detected,
            id,
        })
    }

    /// What payloads get now.
    pub fn current(&self) -> Arc<ResourceMerge> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Detects (the first caller; the others wait for the same result) and, with a
    /// `refresh_interval`, starts refreshing. A detector still failing when `timeout` has
    /// passed fails the start, as in the Collector since v0.146 (errors propagate).
    pub async fn start(self: &Arc<Self>) -> Result<(), String> {
        self.first
            .get_or_init(|| async {
                tracing::info!(processor = %self.id, timeout = ?self.timeout, "began detecting resource information");
                let run = self.detect_all().await;
                if !run.failures.is_empty() {
                    return Err(format!(
                        "resource detection failed within timeout {:?}: {}",
                        self.timeout,
                        run.failure_message()
                    ));
                }
                self.install(run.merged);
                if !self.refresh_interval.is_zero() {
                    let me = self.clone();
                    let task = tokio::spawn(async move { me.refresh_loop().await });
                    *self.refresher.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                }
                Ok(())
            })
            .await
            .clone()
    }

    /// Stops refreshing (idempotent; the last detected resource stays in use).
    pub fn stop(&self) {
        if let Some(task) = self
            .refresher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }

    fn install(&self, detected: DetectedResource) {
        tracing::info!(
            processor = %self.id,
            attributes = ?detected.attributes,
            schema_url = detected.schema_url,
            "detected resource information"
        );
        self.attributes_detected
            .set(detected.attributes.len() as i64);
        let merge = Arc::new(ResourceMerge::new(detected, self.override_existing));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = merge;
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval_at(
            Instant::now() + self.refresh_interval,
            self.refresh_interval,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let run = self.detect_all().await;
            if run.failures.is_empty() {
                self.install(run.merged);
            } else {
                tracing::warn!(
                    processor = %self.id,
                    error = run.failure_message(),
                    "resource refresh failed; keeping previous snapshot"
                );
            }
        }
    }

    /// Every detector at once, merged in configured order.
    pub async fn detect_all(&self) -> DetectionRun {
        let deadline = Instant::now() + self.timeout;
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (kind, detector)) in self.detectors.iter().enumerate() {
            let (kind, detector, host) = (*kind, detector.clone(), self.host.clone());
            let (id, telemetry) = (self.id.clone(), self.telemetry.clone());
            tasks.spawn(async move {
                let r =
                    detect_with_retries(&id, &telemetry, kind, &detector, &host, deadline).await;
                (index, r)
            });
        }
        let mut results: Vec<Option<Result<DetectedResource, DetectError>>> =
            (0..self.detectors.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, r)) => results[index] = Some(r),
                Err(e) => {
                    tracing::error!(processor = %self.id, error = %e, "a detector task failed")
                }
            }
        }
        let mut run = DetectionRun::default();
        for ((kind, _), result) in self.detectors.iter().zip(results) {
            match result {
                Some(Ok(found)) => run.merged.merge_later(found),
                Some(Err(e)) => run.failures.push((*kind, e)),
                None => run.failures.push((
                    *kind,
                    DetectError::Io("the detector stopped without a result".into()),
                )),
            }
        }
        run
    }
}

/// One detector until it succeeds or the deadline comes, with the Collector's backoff between
/// attempts; its outcome and duration are counted.
async fn detect_with_retries(
    processor: &str,
    telemetry: &Telemetry,
    kind: DetectorKind,
    detector: &Detector,
    host: &HostEnvironment,
    deadline: Instant,
) -> Result<DetectedResource, DetectError> {
    let started = Instant::now();
    let mut interval = INITIAL_RETRY;
    let mut attempt = 0u32;
    // As the Collector, the failure is classified by the first attempt's error (the root
    // cause), not the last one's (often just the deadline).
    let mut first_error_type = None;
    // What to report if the deadline ends the retries: the last real error (a status, a
    // refused connection) says more than "timed out".
    let mut last_real: Option<DetectError> = None;
    let result = loop {
        attempt += 1;
        let ran =
            tokio::time::timeout_at(deadline + DEADLINE_GRACE, detector.detect(host, deadline))
                .await;
        let error = match ran {
            Ok(Ok(found)) => break Ok(found),
            Ok(Err(e)) => e,
            Err(_) => DetectError::Timeout(format!(
                "no result before the detection timeout (attempt {attempt})"
            )),
        };
        first_error_type.get_or_insert(error.error_type());
        tracing::warn!(processor, detector = kind.name(), attempt, error = %error, "failed to detect resource");
        if !matches!(error, DetectError::Timeout(_)) {
            last_real = Some(error.clone());
        }
        let delta = interval.mul_f64(RETRY_RANDOMIZATION);
        let wait = (interval.as_secs_f64() - delta.as_secs_f64()
            + 2.0 * delta.as_secs_f64() * unit_random())
        .max(0.0);
        let wait = Duration::from_secs_f64(wait);
        if Instant::now() + wait >= deadline {
            // No retry can happen before the deadline.
            break Err(last_real.unwrap_or(error));
        }
        tokio::time::sleep(wait).await;
        interval = interval.mul_f64(RETRY_MULTIPLIER).min(MAX_RETRY_INTERVAL);
    };
    let outcome = if result.is_ok() { "success" } else { "failure" };
    let name = kind.name();
    telemetry
        .histogram(
            "otelcol_resourcedetection_detector_duration_seconds",
            "Time a detector took, retries included",
            &[
                ("processor", processor),
                ("detector", name),
                ("outcome", outcome),
            ],
            &DURATION_BUCKETS,
        )
        .observe(started.elapsed().as_secs_f64());
    let mut labels = vec![
        ("processor", processor),
        ("detector", name),
        ("outcome", outcome),
    ];
    if let Err(e) = &result {
        labels.push(("error_type", first_error_type.unwrap_or(e.error_type())));
    }
    telemetry
        .counter(
            "otelcol_resourcedetection_detector_results",
            "Detection outcomes by detector",
            &labels,
        )
        .add(1);
    result
}
