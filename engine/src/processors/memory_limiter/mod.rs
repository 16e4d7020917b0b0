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
//! The settings and their meaning are the Collector's: above the soft limit new data is
//! refused (gRPC `RESOURCE_EXHAUSTED`, HTTP 429 + `Retry-After`, so clients retry); nothing
//! already accepted is dropped. What differs is how memory is measured and where data is
//! refused (see [`crate::memory`] and `README.md` beside this file):
//!
//! - memory in use is the bytes sluice holds (payloads in buffers, queues, tail-sampling
//!   segments, requests in flight; counted at once) plus what RSS showed beyond them at the
//!   last `check_interval` sample, not RSS alone;
//! - a receiver whose pipeline starts with this processor asks for admission *before* reading
//!   and decoding a request, reserving its body size and an estimate of its decoded size; so a
//!   burst cannot overshoot between two samples, and refused load costs almost nothing;
//! - after a spike the allocator is asked to return free memory to the OS, so RSS (and the
//!   limiter) sees the truth within a sample or two.
//!
//! Data reaching this processor has either been admitted (receiver ahead of it) or was
//! accepted upstream (a connector feeds the pipeline): it is refused only above the *hard*
//! limit, the backstop. Refusals here are counted as `otelcol_processor_refused_*{processor}`;
//! refusals before decoding (no items known yet) as
//! `sluice_memory_refused_requests_total{receiver,transport,reason}`. Total memory for the
//! percentage forms is the cgroup limit when one is set, else the machine's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::config_types::deserialize_opt_duration;
pub use crate::memory::Limits;
use crate::memory::{MIB, MemoryAccount};
use crate::payload::Payload;
use crate::schema::Signal;
use crate::telemetry::{Counter, ProcessorMetrics};

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
        let account = ctx.telemetry.memory().clone();
        account.register_telemetry(&ctx.telemetry);
        MemoryLimiter::new(&config, signal, next, metrics, account)
            .map(|m| Arc::new(m) as Arc<dyn Node>)
            .map_err(|e| ComponentError::new(&ctx.id, e))
    }
}

pub struct MemoryLimiter {
    signal: Signal,
    next: ConsumerRef,
    interval: Duration,
    limits: Limits,
    account: MemoryAccount,
    refused: Counter,
    metrics: ProcessorMetrics,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MemoryLimiter {
    /// Sets `config`'s limits on `account` (total memory for the percentage forms from the
    /// account's process source).
    pub fn new(
        config: &MemoryLimiterConfig,
        signal: Signal,
        next: ConsumerRef,
        metrics: ProcessorMetrics,
        account: MemoryAccount,
    ) -> Result<Self, String> {
        let interval = config.check().map_err(|e| e.to_string())?;
        let total = account.process().and_then(|p| p.total());
        let limits = config.limits(total)?;
        account.set_limits(limits);
        Ok(MemoryLimiter {
            signal,
            next,
            interval,
            limits,
            account,
            refused: metrics.refused(signal),
            metrics,
            ticker: Mutex::new(None),
        })
    }

    /// Samples memory once (what the ticker does each interval).
    pub fn check_now(&self) {
        self.account.sample();
    }
}

impl Consumer for MemoryLimiter {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = payload.item_count();
            self.metrics.incoming(self.signal, n);
            if self.account.above_hard_limit() {
                self.refused.add(n as u64);
                return Err(ConsumeError::Refused(format!(
                    "data refused due to high memory usage: {} MiB in use, hard limit {} MiB",
                    self.account.used() / MIB,
                    self.limits.hard / MIB
                )));
            }
            self.next.consume(payload).await?;
            self.metrics.outgoing(self.signal, n);
            Ok(())
        })
    }

    fn memory_limited(&self) -> bool {
        true
    }

    /// It only counts items (a wire form knows its count).
    fn keeps_wire_form(&self) -> bool {
        self.next.keeps_wire_form()
    }
}

impl Lifecycle for MemoryLimiter {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            self.check_now();
            let account = self.account.clone();
            let interval = self.interval;
            let handle = tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    account.sample();
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
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::component::ComponentId;
    use crate::memory::{ProcessMemory, Refusal};
    use crate::processors::test_support::{Capture, spans};
    use crate::telemetry::Telemetry;

    struct Fake(AtomicU64);
    impl ProcessMemory for Fake {
        fn resident(&self) -> Option<u64> {
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

    /// Admission (what receivers ask before decoding) follows RSS sampled every interval and
    /// the soft limit; the processor itself refuses only above the hard limit; and both
    /// recover as soon as memory drops.
    #[tokio::test(start_paused = true)]
    async fn admission_follows_the_soft_limit_and_the_processor_the_hard_one() {
        let fake = Arc::new(Fake(AtomicU64::new(100 * MIB)));
        let cap = Capture::default();
        let t = Telemetry::new();
        t.memory().set_process(fake.clone());
        let c = cfg(
            serde_json::json!({"check_interval": "1s", "limit_mib": 1000, "spike_limit_mib": 200}),
        )
        .unwrap();
        let m = ProcessorMetrics::new(&t, &ComponentId::parse("memory_limiter").unwrap());
        let ml = MemoryLimiter::new(
            &c,
            Signal::Traces,
            Arc::new(cap.clone()),
            m,
            t.memory().clone(),
        )
        .unwrap();
        assert!(
            ml.memory_limited(),
            "receivers ask this pipeline for admission"
        );
        assert_eq!(
            t.memory().limits(),
            Some(Limits {
                hard: 1000 * MIB,
                soft: 800 * MIB
            })
        );
        let receiver = t.memory().holder(&t, "otlp", "in_flight");
        ml.start().await.unwrap();
        drop(receiver.admit(10 * MIB as usize).unwrap());
        ml.consume(spans(0, 3)).await.unwrap();

        fake.0.store(850 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(
            receiver.admit(1024),
            Err(Refusal::AboveSoftLimit { .. })
        ));
        // Between the soft and the hard limit, data that was admitted still flows.
        ml.consume(spans(3, 2)).await.unwrap();

        fake.0.store(1001 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let e = ml.consume(spans(5, 4)).await.unwrap_err();
        assert!(
            matches!(&e, ConsumeError::Refused(m) if m.contains("hard limit")),
            "{e:?}"
        );

        fake.0.store(700 * MIB, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        drop(receiver.admit(10 * MIB as usize).unwrap());
        ml.consume(spans(9, 2)).await.unwrap();
        assert_eq!(cap.items(), 7, "refused items were not passed on");
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
