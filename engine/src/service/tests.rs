//! Wiring and lifecycle order, with tiny in-test components that record what happens to them.

use std::sync::Mutex;

use serde_json::Value;

use super::*;
use crate::clock::WallClock;
use crate::component::{
    BoxFuture, ConfigError, ConsumeError, Consumer, Factory, Lifecycle, ParsedConfig,
    SignalConsumers,
};
use crate::config::{Source, load};
use crate::payload::Payload;
use crate::telemetry::{ExporterMetrics, ProcessorMetrics, ReceiverMetrics};

type Log = Arc<Mutex<Vec<String>>>;

struct TestFactory {
    kind: Kind,
    name: &'static str,
    log: Log,
    /// Receivers built by this factory, so the test can push data through them.
    receivers: Arc<Mutex<Vec<SignalConsumers>>>,
}

struct Recorder {
    name: String,
    log: Log,
    next: Option<ConsumerRef>,
}

impl Consumer for Recorder {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("consume {}", self.name));
            match &self.next {
                Some(n) => n.consume(p).await,
                None => Ok(()),
            }
        })
    }
}

impl Lifecycle for Recorder {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("start {}", self.name));
            Ok(())
        })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // An exporter named `x/panics` fails its shutdown, as a bug in one would.
            if self.name == "exporter x/panics" {
                panic!("injected: shutdown of {}", self.name);
            }
            self.log.lock().unwrap().push(format!("stop {}", self.name))
        })
    }
}

impl Factory for TestFactory {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn type_name(&self) -> &'static str {
        self.name
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "test"
    }
    fn parse_config(&self, _: &Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(()))
    }
    fn build_receiver(
        &self,
        ctx: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn Svc>, ComponentError> {
        self.receivers.lock().unwrap().push(consumers);
        let _ = ReceiverMetrics::new(&ctx.telemetry, &ctx.id, "test");
        Ok(Arc::new(Recorder {
            name: format!("receiver {}", ctx.id),
            log: self.log.clone(),
            next: None,
        }))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let _ = ProcessorMetrics::new(&ctx.telemetry, &ctx.id);
        Ok(Arc::new(Recorder {
            name: format!("processor {} ({})", ctx.id, signal.as_str()),
            log: self.log.clone(),
            next: Some(next),
        }))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let metrics = ExporterMetrics::new(&ctx.telemetry, &ctx.id);
        // As a queued exporter does: its queue's gauges, which are not per signal.
        let _ = metrics.queue_gauges();
        Ok(Arc::new(Recorder {
            name: format!("exporter {}", ctx.id),
            log: self.log.clone(),
            next: None,
        }))
    }
    fn connects(&self) -> &'static [(Signal, Signal)] {
        &[
            (Signal::Traces, Signal::Metrics),
            (Signal::Metrics, Signal::Traces),
        ]
    }
    fn build_connector(
        &self,
        ctx: BuildContext,
        from: Signal,
        to: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        Ok(Arc::new(Recorder {
            name: format!("connector {} ({}->{})", ctx.id, from.as_str(), to.as_str()),
            log: self.log.clone(),
            next: Some(next),
        }))
    }
}

fn registry(log: &Log, receivers: &Arc<Mutex<Vec<SignalConsumers>>>) -> Registry {
    let f = |kind, name| {
        Arc::new(TestFactory {
            kind,
            name,
            log: log.clone(),
            receivers: Arc::clone(receivers),
        }) as Arc<dyn Factory>
    };
    Registry::new([
        f(Kind::Receiver, "otlp"),
        f(Kind::Processor, "a"),
        f(Kind::Processor, "b"),
        f(Kind::Exporter, "x"),
        f(Kind::Exporter, "y"),
        f(Kind::Connector, "c"),
        f(Kind::Connector, "d"),
    ])
}

fn load_errors(yaml: &str) -> String {
    let registry = registry(&Log::default(), &Arc::default());
    let errors = load(
        &[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }],
        &|_| None,
        &registry,
    )
    .err()
    .unwrap_or_default();
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

const CONNECTED: &str = "
receivers: {otlp: {}}
processors: {a: {}, b: {}}
exporters: {x: {}, y: {}}
connectors: {c: {}}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [a], exporters: [x, c]}
    metrics/derived: {receivers: [c], processors: [b], exporters: [y]}
";

#[tokio::test]
async fn a_connector_joins_pipelines_and_stops_between_them() {
    let (svc, log, receivers) = setup(CONNECTED);
    svc.start().await.unwrap();
    let started = log.lock().unwrap().clone();
    let pos = |v: &[String], s: &str| {
        v.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {v:?}"))
    };
    assert!(
        pos(&started, "start processor b (metrics)")
            < pos(&started, "start connector c (traces->metrics)")
    );
    assert!(
        pos(&started, "start connector c (traces->metrics)")
            < pos(&started, "start processor a (traces)")
    );
    let consumers = receivers.lock().unwrap().pop().expect("one receiver built");
    assert_eq!(
        consumers.keys().copied().collect::<Vec<_>>(),
        [Signal::Traces]
    );
    log.lock().unwrap().clear();
    consumers[&Signal::Traces]
        .consume(Payload::empty(Signal::Traces))
        .await
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "consume processor a (traces)",
            "consume exporter x",
            "consume connector c (traces->metrics)",
            "consume processor b (metrics)",
            "consume exporter y",
        ]
    );
    log.lock().unwrap().clear();
    svc.shutdown().await;
    let stopped = log.lock().unwrap().clone();
    // traces flush into the connector, the connector flushes into the metrics pipeline, which
    // flushes into its exporter.
    assert!(pos(&stopped, "stop receiver otlp") < pos(&stopped, "stop processor a (traces)"));
    assert!(
        pos(&stopped, "stop processor a (traces)")
            < pos(&stopped, "stop connector c (traces->metrics)")
    );
    assert!(
        pos(&stopped, "stop connector c (traces->metrics)")
            < pos(&stopped, "stop processor b (metrics)")
    );
    assert!(pos(&stopped, "stop processor b (metrics)") < pos(&stopped, "stop exporter y"));
}

#[test]
fn connector_misuse_is_refused_with_the_pipeline_named() {
    let e = load_errors(
        "receivers: {otlp: {}}\nexporters: {x: {}}\nconnectors: {c: {}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [c]}}}",
    );
    assert!(
        e.contains("service.pipelines.traces.exporters: connector \"c\" is used as exporter in traces pipeline traces but not as receiver"),
        "{e}"
    );
    let e = load_errors(
        "receivers: {otlp: {}}\nexporters: {x: {}}\nconnectors: {c: {}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [c]}, logs: {receivers: [c], exporters: [x]}}}",
    );
    assert!(
        e.contains("(it connects: traces -> metrics, metrics -> traces)"),
        "{e}"
    );
    let e = load_errors(
        "receivers: {otlp: {}}\nexporters: {x: {}}\nconnectors: {c: {}, d: {}}\nservice: {pipelines: {\
         traces: {receivers: [otlp, d], exporters: [c]}, metrics: {receivers: [c], exporters: [d]}}}",
    );
    assert!(e.contains("connectors form a cycle"), "{e}");
    let e = load_errors(
        "receivers: {otlp: {}}\nexporters: {x: {}}\nconnectors: {x: {}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [x]}}}",
    );
    assert!(e.contains("ambiguous id \"x\""), "{e}");
}

fn setup(yaml: &str) -> (Service, Log, Arc<Mutex<Vec<SignalConsumers>>>) {
    setup_with(yaml, &Telemetry::new())
}

fn setup_with(
    yaml: &str,
    telemetry: &Telemetry,
) -> (Service, Log, Arc<Mutex<Vec<SignalConsumers>>>) {
    let log: Log = Arc::default();
    let receivers = Arc::default();
    let registry = registry(&log, &receivers);
    let cfg = load(
        &[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }],
        &|_| None,
        &registry,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let svc = Service::build(
        &cfg,
        &registry,
        telemetry,
        Arc::new(WallClock),
        Health::default(),
    )
    .unwrap();
    (svc, log, receivers)
}

const YAML: &str = "
receivers: {otlp: {}}
processors: {a: {}, b: {}}
exporters: {x: {}, y: {}}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [a, b], exporters: [x, y]}
    traces/2: {receivers: [otlp], processors: [b], exporters: [y]}
    logs: {receivers: [otlp], exporters: [x]}
";

#[tokio::test]
async fn receiver_feeds_every_pipeline_through_processors_in_order() {
    let (svc, log, receivers) = setup(YAML);
    svc.start().await.unwrap();
    let consumers = receivers.lock().unwrap().pop().expect("one receiver built");
    assert_eq!(
        consumers.keys().copied().collect::<Vec<_>>(),
        [Signal::Traces, Signal::Logs]
    );
    log.lock().unwrap().clear();
    consumers[&Signal::Traces]
        .consume(Payload::empty(Signal::Traces))
        .await
        .unwrap();
    let got = log.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "consume processor a (traces)",
            "consume processor b (traces)",
            "consume exporter x",
            "consume exporter y",
            "consume processor b (traces)",
            "consume exporter y",
        ],
        "fan-out to both traces pipelines; pipeline order a, b; exporter y shared"
    );
    log.lock().unwrap().clear();
    consumers[&Signal::Logs]
        .consume(Payload::empty(Signal::Logs))
        .await
        .unwrap();
    assert_eq!(*log.lock().unwrap(), ["consume exporter x"]);
}

#[tokio::test]
async fn starts_downstream_first_and_stops_upstream_first() {
    let (svc, log, _) = setup(YAML);
    let health = svc.health.clone();
    svc.start().await.unwrap();
    assert_eq!(health.status(), Status::Ready);
    let started = log.lock().unwrap().clone();
    let pos = |v: &[String], s: &str| {
        v.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {v:?}"))
    };
    assert!(pos(&started, "start exporter x") < pos(&started, "start processor b (traces)"));
    assert!(
        pos(&started, "start processor b (traces)") < pos(&started, "start processor a (traces)")
    );
    assert!(pos(&started, "start processor a (traces)") < pos(&started, "start receiver otlp"));
    assert_eq!(
        started
            .iter()
            .filter(|s| s.starts_with("start exporter"))
            .count(),
        2,
        "exporters are shared"
    );
    log.lock().unwrap().clear();
    assert_eq!(
        svc.shutdown().await,
        [],
        "every exporter's shutdown finished"
    );
    assert_eq!(health.status(), Status::ShuttingDown);
    let stopped = log.lock().unwrap().clone();
    assert!(pos(&stopped, "stop receiver otlp") < pos(&stopped, "stop processor a (traces)"));
    assert!(
        pos(&stopped, "stop processor a (traces)") < pos(&stopped, "stop processor b (traces)")
    );
    assert!(pos(&stopped, "stop processor b (traces)") < pos(&stopped, "stop exporter x"));
}

/// Self-telemetry shows a component's per-signal series only for the signals the pipelines
/// wire it for: `x` exports traces and logs, so it has no metric points series; `y` only
/// traces; the receiver feeds traces and logs; processor `a` runs on traces only.
#[test]
fn series_exist_only_for_the_signals_a_component_is_wired_for() {
    let t = Telemetry::new();
    let _ = setup_with(YAML, &t);
    let text = t.render();
    let has = |series: &str| text.lines().any(|l| l.starts_with(series));
    for present in [
        "otelcol_exporter_sent_spans_total{exporter=\"x\"}",
        "otelcol_exporter_sent_log_records_total{exporter=\"x\"}",
        "otelcol_exporter_send_failed_log_records_total{exporter=\"x\"}",
        "otelcol_exporter_sent_spans_total{exporter=\"y\"}",
        "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"test\"}",
        "otelcol_receiver_accepted_log_records_total{receiver=\"otlp\",transport=\"test\"}",
        "otelcol_processor_incoming_items_total{otel_signal=\"traces\",processor=\"a\"}",
        "otelcol_exporter_queue_size{exporter=\"y\"}",
    ] {
        assert!(has(present), "{present} missing from\n{text}");
    }
    for absent in [
        "otelcol_exporter_sent_metric_points_total{exporter=\"x\"}",
        "otelcol_exporter_sent_log_records_total{exporter=\"y\"}",
        "otelcol_exporter_enqueue_failed_metric_points_total{exporter=\"y\"}",
        "otelcol_receiver_accepted_metric_points_total",
        "otelcol_processor_incoming_items_total{otel_signal=\"logs\",processor=\"a\"}",
        "otelcol_processor_incoming_items_total{otel_signal=\"metrics\"",
    ] {
        assert!(!has(absent), "{absent} shown in\n{text}");
    }
    // No series at all for metrics: the family is not rendered either.
    assert!(
        !text.contains("otelcol_exporter_sent_metric_points"),
        "{text}"
    );
    assert_eq!(
        t.value("otelcol_exporter_sent_metric_points", &[("exporter", "x")]),
        None
    );
}

/// An exporter whose shutdown panics is named in what `shutdown` returns (so `sluice` exits
/// non-zero: what it held is not accounted for), and the other exporters still drain.
#[tokio::test]
async fn an_exporter_whose_shutdown_panics_is_reported_and_the_others_still_stop() {
    let (svc, log, _) = setup(
        "
receivers: {otlp: {}}
exporters: {x/panics: {}, y: {}}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [x/panics, y]}
",
    );
    svc.start().await.unwrap();
    let unfinished = svc.shutdown().await;
    assert_eq!(
        unfinished
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>(),
        ["x/panics"]
    );
    assert!(
        log.lock().unwrap().contains(&"stop exporter y".to_string()),
        "{:?}",
        log.lock().unwrap()
    );
}
