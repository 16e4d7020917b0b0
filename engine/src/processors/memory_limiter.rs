//! `memory_limiter`: refuses new data while the process uses too much memory, so clients back
//! off and retry instead of the process being OOM-killed (the Collector's memorylimiter).
//!
//! ```yaml
//! processors:
//!   memory_limiter:
//!     check_interval: 1s           # required
//!     limit_mib: 4000              # hard limit, or limit_percentage of total memory
//!     spike_limit_mib: 800         # default 20% of the limit; soft limit = limit - spike
//!     # limit_percentage: 80
//!     # spike_limit_percentage: 20
//! ```
//!
//! Memory in use (RSS) is sampled every `check_interval` into an atomic, so `consume` costs
//! one atomic load. Above the soft limit, `consume` returns `Refused`, which receivers answer
//! with gRPC `RESOURCE_EXHAUSTED` / HTTP 429 + `Retry-After`; nothing already accepted is
//! dropped. Refusals are counted as `otelcol_processor_refused_*{processor}`. Total memory for
//! the percentage forms is the cgroup limit when one is set, else the machine's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::config_types::deserialize_opt_duration;
use crate::payload::Payload;
use crate::schema::Signal;
use crate::telemetry::{Counter, ProcessorMetrics, process_rss_bytes};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub check_interval: Option<Duration>,
    #[serde(default)]
    pub limit_mib: u64,
    #[serde(default)]
    pub spike_limit_mib: Option<u64>,
    #[serde(default)]
    pub limit_percentage: u64,
    #[serde(default)]
    pub spike_limit_percentage: Option<u64>,
}

/// Where memory figures come from; injectable so tests can drive the limiter.
pub trait MemorySource: Send + Sync + 'static {
    /// Bytes in use now.
    fn used(&self) -> Option<u64>;
    /// Bytes available to the process in total (for the percentage settings).
    fn total(&self) -> Option<u64>;
}

/// RSS from `/proc/self/statm`; total from the cgroup limit, else `/proc/meminfo`.
pub struct ProcessMemory;

impl MemorySource for ProcessMemory {
    fn used(&self) -> Option<u64> {
        process_rss_bytes()
    }
    fn total(&self) -> Option<u64> {
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        cgroup.or_else(|| {
            let info = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
    }
}

/// The limits in bytes, from config and total memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub hard: u64,
    pub soft: u64,
}

impl MemoryLimiterConfig {
    pub fn check(&self) -> Result<Duration, ConfigError> {
        match self.check_interval {
            Some(d) if !d.is_zero() => {}
            _ => {
                return Err(ConfigError::new(
                    "check_interval",
                    "must be set and greater than 0",
                ));
            }
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err(ConfigError::new(
                "limit_mib",
                "set limit_mib or limit_percentage",
            ));
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage.is_some_and(|p| p > 100) {
            return Err(ConfigError::new(
                "limit_percentage",
                "percentages must be between 0 and 100",
            ));
        }
        if self.limit_mib > 0 && self.spike_limit_mib.is_some_and(|s| s >= self.limit_mib) {
            return Err(ConfigError::new(
                "spike_limit_mib",
                "must be smaller than limit_mib",
            ));
        }
        if self.limit_mib == 0
            && self
                .spike_limit_percentage
                .is_some_and(|s| s >= self.limit_percentage)
        {
            return Err(ConfigError::new(
                "spike_limit_percentage",
                "must be smaller than limit_percentage",
            ));
        }
        Ok(self.check_interval.unwrap_or_default())
    }

    pub fn limits(&self, total: Option<u64>) -> Result<Limits, String> {
        let (hard, spike) = if self.limit_mib > 0 {
            let hard = self.limit_mib * MIB;
            (
                hard,
                self.spike_limit_mib.map(|s| s * MIB).unwrap_or(hard / 5),
            )
        } else {
            let total =
                total.ok_or("limit_percentage is set but total memory cannot be determined")?;
            let hard = total / 100 * self.limit_percentage;
            (
                hard,
                self.spike_limit_percentage
                    .map(|p| total / 100 * p)
                    .unwrap_or(hard / 5),
            )
        };
        Ok(Limits {
            hard,
            soft: hard.saturating_sub(spike),
        })
    }
}

pub struct MemoryLimiterFactory;

impl Factory for MemoryLimiterFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "memory_limiter"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "refuses data (clients retry) while memory use is above the soft limit"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: MemoryLimiterConfig = parse_config(config)?;
        c.check()?;
        Ok(Arc::new(c))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<MemoryLimiterConfig>()?;
        let metrics = ProcessorMetrics::new(&ctx.telemetry, &ctx.id);
        MemoryLimiter::new(&config, signal, next, metrics, Arc::new(ProcessMemory))
            .map(|m| Arc::new(m) as Arc<dyn Node>)
            .map_err(|e| ComponentError::new(&ctx.id, e))
    }
}

pub struct MemoryLimiter {
    signal: Signal,
    next: ConsumerRef,
    interval: Duration,
    limits: Limits,
    source: Arc<dyn MemorySource>,
    refusing: Arc<AtomicBool>,
    last_used: Arc<AtomicU64>,
    refused: Counter,
    metrics: ProcessorMetrics,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MemoryLimiter {
    pub fn new(
        config: &MemoryLimiterConfig,
        signal: Signal,
        next: ConsumerRef,
        metrics: ProcessorMetrics,
        source: Arc<dyn MemorySource>,
    ) -> Result<Self, String> {
        let interval = config.check().map_err(|e| e.to_string())?;
        let limits = config.limits(source.total())?;
        Ok(MemoryLimiter {
            signal,
            next,
            interval,
            limits,
            source,
            refusing: Arc::default(),
            last_used: Arc::default(),
            refused: metrics.refused(signal),
            metrics,
            ticker: Mutex::new(None),
        })
    }

    /// Samples memory once and updates the refusing flag (what the ticker does each interval).
    pub fn check_now(&self) {
        sample(&*self.source, self.limits, &self.refusing, &self.last_used);
    }
}

fn sample(source: &dyn MemorySource, limits: Limits, refusing: &AtomicBool, last: &AtomicU64) {
    let Some(used) = source.used() else { return };
    last.store(used, Ordering::Relaxed);
    let was = refusing.load(Ordering::Relaxed);
    let now = used >= limits.soft;
    if now != was {
        refusing.store(now, Ordering::Relaxed);
        if now {
            tracing::warn!(
                used_mib = used / MIB,
                soft_limit_mib = limits.soft / MIB,
                "memory usage above soft limit: refusing data"
            );
        } else {
            tracing::info!(
                used_mib = used / MIB,
                "memory usage back below soft limit: accepting data"
            );
        }
    }
    if used >= limits.hard {
        tracing::warn!(
            used_mib = used / MIB,
            hard_limit_mib = limits.hard / MIB,
            "memory usage above hard limit"
        );
    }
}

impl Consumer for MemoryLimiter {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = payload.item_count();
            self.metrics.incoming(self.signal, n);
            if self.refusing.load(Ordering::Relaxed) {
                self.refused.add(n as u64);
                return Err(ConsumeError::Refused(
                    "data refused due to high memory usage".into(),
                ));
            }
            self.next.consume(payload).await?;
            self.metrics.outgoing(self.signal, n);
            Ok(())
        })
    }
}

impl Lifecycle for MemoryLimiter {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            self.check_now();
            let (source, limits) = (self.source.clone(), self.limits);
            let (refusing, last) = (self.refusing.clone(), self.last_used.clone());
            let interval = self.interval;
            let handle = tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    sample(&*source, limits, &refusing, &last);
                }
            });
            *self.ticker.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            Ok(())
        })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(h) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                h.abort();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::ComponentId;
    use crate::processors::test_support::{Capture, spans};
    use crate::telemetry::Telemetry;

    struct Fake(AtomicU64);
    impl MemorySource for Fake {
        fn used(&self) -> Option<u64> {
            Some(self.0.load(Ordering::Relaxed))
        }
        fn total(&self) -> Option<u64> {
            Some(10_000 * MIB)
        }
    }

    fn cfg(v: serde_json::Value) -> Result<MemoryLimiterConfig, ConfigError> {
        let c: MemoryLimiterConfig = parse_config(&v)?;
        c.check()?;
        Ok(c)
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_above_the_soft_limit_and_recovers() {
        let fake = Arc::new(Fake(AtomicU64::new(100 * MIB)));
        let cap = Capture::default();
        let t = Telemetry::new();
        let c = cfg(
            serde_json::json!({"check_interval": "1s", "limit_mib": 1000, "spike_limit_mib": 200}),
        )
        .unwrap();
        let m = ProcessorMetrics::new(&t, &ComponentId::parse("memory_limiter").unwrap());
        let ml =
            MemoryLimiter::new(&c, Signal::Traces, Arc::new(cap.clone()), m, fake.clone()).unwrap();
        assert_eq!(
            ml.limits,
            Limits {
                hard: 1000 * MIB,
                soft: 800 * MIB
            }
        );
        ml.start().await.unwrap();
        ml.consume(spans(0, 3)).await.unwrap();
        fake.0.store(850 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let e = ml.consume(spans(3, 4)).await.unwrap_err();
        assert_eq!(
            e,
            ConsumeError::Refused("data refused due to high memory usage".into())
        );
        fake.0.store(700 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        ml.consume(spans(7, 2)).await.unwrap();
        assert_eq!(cap.items(), 5, "refused items were not passed on");
        assert_eq!(
            t.value(
                "otelcol_processor_refused_spans",
                &[("processor", "memory_limiter")]
            ),
            Some(4.0)
        );
        ml.shutdown().await;
    }

    #[test]
    fn percentages_use_total_memory() {
        let c = cfg(serde_json::json!({"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20})).unwrap();
        let l = c.limits(Some(1000 * MIB)).unwrap();
        assert_eq!(
            l,
            Limits {
                hard: 800 * MIB,
                soft: 600 * MIB
            }
        );
        let c = cfg(serde_json::json!({"check_interval": "1s", "limit_mib": 100})).unwrap();
        assert_eq!(
            c.limits(None).unwrap().soft,
            80 * MIB,
            "spike defaults to 20% of the limit"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let path = |v| cfg(v).unwrap_err().path;
        assert_eq!(
            path(serde_json::json!({"limit_mib": 100})),
            "check_interval"
        );
        assert_eq!(
            path(serde_json::json!({"check_interval": "1s"})),
            "limit_mib"
        );
        assert_eq!(
            path(
                serde_json::json!({"check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 100})
            ),
            "spike_limit_mib"
        );
        assert_eq!(
            path(
                serde_json::json!({"check_interval": "1s", "limit_percentage": 50, "spike_limit_percentage": 60})
            ),
            "spike_limit_percentage"
        );
    }
}
