use std::time::Duration;

use super::*;
use crate::component::ComponentId;
use crate::processors::hand_over::SHUTDOWN_RETRY_FOR;
use crate::processors::test_support::{Capture, WireCapture, span_ids, spans, wire_spans};
use crate::telemetry::Telemetry;

fn batch(size: usize, max: usize, timeout_ms: u64) -> (Batch, Capture, Telemetry) {
    let cap = Capture::default();
    let t = Telemetry::new();
    let cfg = BatchConfig {
        send_batch_size: size,
        send_batch_max_size: max,
        timeout: Duration::from_millis(timeout_ms),
        metadata_keys: vec![],
        metadata_cardinality_limit: None,
    };
    let m = ProcessorMetrics::new(&t, &ComponentId::parse("batch").unwrap());
    (
        Batch::new(&cfg, Signal::Traces, Arc::new(cap.clone()), m),
        cap,
        t,
    )
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn sends_when_size_is_reached_without_waiting_for_the_timeout() {
    let (b, cap, _) = batch(10, 0, 60_000);
    b.start().await.unwrap();
    b.consume(spans(0, 4)).await.unwrap();
    b.consume(spans(4, 4)).await.unwrap();
    settle().await;
    assert_eq!(cap.items(), 0, "below size, before timeout: nothing sent");
    b.consume(spans(8, 4)).await.unwrap();
    settle().await;
    assert_eq!(cap.batches(), [12], "one merged batch");
    assert_eq!(
        span_ids(&cap.got.lock().unwrap()[0]),
        (0..12).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn sends_what_is_buffered_after_the_timeout() {
    let (b, cap, _) = batch(1000, 0, 200);
    b.start().await.unwrap();
    b.consume(spans(0, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    settle().await;
    assert_eq!(cap.items(), 0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    settle().await;
    assert_eq!(cap.batches(), [3]);
}

#[tokio::test(start_paused = true)]
async fn splits_batches_larger_than_max_size() {
    let (b, cap, _) = batch(5, 7, 60_000);
    b.start().await.unwrap();
    b.consume(spans(0, 20)).await.unwrap();
    settle().await;
    assert_eq!(cap.batches(), [7, 7, 6]);
    let all: Vec<u64> = cap.got.lock().unwrap().iter().flat_map(span_ids).collect();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
}

/// Wire forms (requests kept as their bytes) are batched without decoding: concatenated as
/// a list of their resources, split at resource boundaries to `send_batch_max_size`; a
/// resource alone over the limit, or a mix with decoded payloads, is decoded and handled as
/// tables. Every span arrives once, in order. `batch` takes wire forms when what follows it does.
#[tokio::test(start_paused = true)]
async fn wire_forms_are_batched_as_bytes_and_split_at_resources() {
    let (plain, _, _) = batch(10, 12, 60_000);
    assert!(!plain.keeps_wire_form());
    let cap = WireCapture::default();
    let cfg = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 12,
        timeout: Duration::from_secs(60),
        metadata_keys: vec![],
        metadata_cardinality_limit: None,
    };
    let t = Telemetry::new();
    let m = ProcessorMetrics::new(&t, &ComponentId::parse("batch").unwrap());
    let b = Batch::new(&cfg, Signal::Traces, Arc::new(cap.clone()), m);
    assert!(b.keeps_wire_form());
    b.start().await.unwrap();
    let sent = |from: usize| -> Vec<(usize, bool, usize)> {
        cap.0.got.lock().unwrap()[from..]
            .iter()
            .map(|p| {
                (
                    p.item_count(),
                    p.wire().is_some(),
                    p.wire().map_or(0, |w| w.resource_count()),
                )
            })
            .collect()
    };
    // Two requests (2 x 3 spans, then 4): one batch of their three resources, still bytes.
    b.consume(wire_spans(0, 2, 3)).await.unwrap();
    b.consume(wire_spans(6, 1, 4)).await.unwrap();
    settle().await;
    assert_eq!(sent(0), [(10, true, 3)]);
    // 4 resources of 4 spans: split at resources to 12 + 4.
    b.consume(wire_spans(10, 4, 4)).await.unwrap();
    settle().await;
    assert_eq!(sent(1), [(12, true, 3), (4, true, 1)]);
    // One resource of 15 spans, over the limit alone: decoded and split inside it.
    b.consume(wire_spans(26, 1, 15)).await.unwrap();
    settle().await;
    assert_eq!(sent(3), [(12, false, 0), (3, false, 0)]);
    // Bytes and tables together: decoded and concatenated as tables. Buffered, a wire form
    // holds its bytes (and nothing more) in the memory account.
    let held = || {
        t.value(
            "sluice_memory_held_bytes",
            &[("component", "batch"), ("kind", "batch")],
        )
    };
    let waiting = wire_spans(41, 1, 5);
    let bytes = waiting.wire().unwrap().len();
    assert_eq!(waiting.memory_size(), bytes);
    b.consume(waiting).await.unwrap();
    settle().await;
    assert_eq!(held(), Some(bytes as f64));
    b.consume(spans(46, 5)).await.unwrap();
    settle().await;
    assert_eq!(sent(5), [(10, false, 0)]);
    assert_eq!(held(), Some(0.0));
    let all: Vec<u64> = cap
        .0
        .got
        .lock()
        .unwrap()
        .iter()
        .flat_map(span_ids)
        .collect();
    assert_eq!(all, (0..51).collect::<Vec<_>>());
}

/// A next consumer that holds each payload until a permit is released.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    cap: Capture,
}

impl Consumer for Gated {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            self.cap.consume(p).await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_backlog_built_during_a_slow_send_leaves_in_batches_of_the_batch_size() {
    let cap = Capture::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let cfg = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 0,
        timeout: Duration::from_secs(60),
        metadata_keys: vec![],
        metadata_cardinality_limit: None,
    };
    let t = Telemetry::new();
    let next = Arc::new(Gated {
        gate: gate.clone(),
        cap: cap.clone(),
    });
    let b = Batch::new(
        &cfg,
        Signal::Traces,
        next,
        ProcessorMetrics::new(&t, &ComponentId::parse("batch").unwrap()),
    );
    b.start().await.unwrap();
    b.consume(spans(0, 10)).await.unwrap();
    settle().await; // the worker is now blocked sending the first batch
    for i in 1..4 {
        b.consume(spans(i * 10, 4)).await.unwrap();
        b.consume(spans(i * 10 + 4, 6)).await.unwrap();
    }
    gate.add_permits(100);
    settle().await;
    assert_eq!(
        cap.batches(),
        [10, 10, 10, 10],
        "not one merged backlog of 30"
    );
    let all: Vec<u64> = cap.got.lock().unwrap().iter().flat_map(span_ids).collect();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_everything() {
    let (b, cap, _) = batch(1000, 0, 60_000);
    b.start().await.unwrap();
    b.consume(spans(0, 5)).await.unwrap();
    b.shutdown().await;
    assert_eq!(cap.items(), 5);
    assert!(
        b.consume(spans(5, 1)).await.is_err(),
        "a stopped batch refuses, it does not lose"
    );
}

#[tokio::test]
async fn many_concurrent_producers_lose_and_duplicate_nothing() {
    let (b, cap, t) = batch(64, 100, 5);
    let b = Arc::new(b);
    b.start().await.unwrap();
    let mut tasks = Vec::new();
    for p in 0..8u64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                b.consume(spans(p * 1_000_000 + i * 10, 7)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    b.shutdown().await;
    let mut ids: Vec<u64> = cap.got.lock().unwrap().iter().flat_map(span_ids).collect();
    assert!(cap.batches().iter().all(|&n| n <= 100));
    ids.sort();
    let mut want: Vec<u64> = (0..8u64)
        .flat_map(|p| (0..50u64).flat_map(move |i| (0..7).map(move |k| p * 1_000_000 + i * 10 + k)))
        .collect();
    want.sort();
    assert_eq!(ids, want);
    let labels = [("processor", "batch"), ("otel_signal", "traces")];
    assert_eq!(
        t.value("otelcol_processor_incoming_items", &labels),
        Some(2800.0)
    );
    assert_eq!(
        t.value("otelcol_processor_outgoing_items", &labels),
        Some(2800.0)
    );
}

fn export_failed(t: &Telemetry) -> Option<f64> {
    t.value(
        "otelcol_processor_dropped_spans",
        &[("processor", "batch"), ("reason", "export_failed")],
    )
}

#[tokio::test(start_paused = true)]
async fn permanently_refused_sends_are_counted_as_dropped() {
    let (b, cap, t) = batch(2, 0, 60_000);
    *cap.refuse.lock().unwrap() = Some(ConsumeError::Permanent("bad data".into()));
    b.start().await.unwrap();
    b.consume(spans(0, 3)).await.unwrap();
    settle().await;
    assert_eq!(export_failed(&t), Some(3.0));
}

/// What `batch` buffered was acknowledged to its client: a batch refused for now (a full
/// sending queue) is offered again until it is taken, never dropped.
#[tokio::test(start_paused = true)]
async fn a_batch_refused_for_now_is_offered_again_until_taken() {
    let (b, cap, t) = batch(2, 0, 60_000);
    *cap.refuse.lock().unwrap() = Some(ConsumeError::Unavailable("sending queue is full".into()));
    b.start().await.unwrap();
    b.consume(spans(0, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(cap.items(), 0, "refused: nothing delivered yet");
    assert_eq!(export_failed(&t).unwrap_or(0.0), 0.0, "and nothing dropped");
    *cap.refuse.lock().unwrap() = None;
    // The backoff is at most a second between offers.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    settle().await;
    assert_eq!(span_ids(&cap.got.lock().unwrap()[0]), vec![0, 1, 2]);
    assert_eq!(export_failed(&t).unwrap_or(0.0), 0.0);
}

/// While the next component refuses, the buffer fills to its bound and producers wait (the
/// receivers' clients see back-pressure), then everything buffered leaves once it takes data.
#[tokio::test(start_paused = true)]
async fn while_refused_the_buffer_fills_and_producers_wait() {
    let (b, cap, t) = batch(2, 0, 60_000);
    *cap.refuse.lock().unwrap() = Some(ConsumeError::Refused("memory".into()));
    let b = Arc::new(b);
    b.start().await.unwrap();
    // The worker takes the first batch (2) and keeps offering it; the buffer holds up to
    // 4 × 2 items more before `consume` waits.
    let mut next = 0;
    let waited = loop {
        let consumed =
            tokio::time::timeout(Duration::from_secs(5), b.consume(spans(next, 1))).await;
        if consumed.is_err() {
            break next;
        }
        consumed.unwrap().unwrap();
        next += 1;
        settle().await;
        assert!(next < 100, "the buffer never pushed back");
    };
    assert!(
        (8..=12).contains(&waited),
        "pushed back after {waited} items"
    );
    *cap.refuse.lock().unwrap() = None;
    b.consume(spans(next, 1)).await.unwrap();
    b.shutdown().await;
    let mut got: Vec<u64> = cap.got.lock().unwrap().iter().flat_map(span_ids).collect();
    got.sort_unstable();
    // The timed-out `consume` never buffered its item (it was still waiting for room).
    let want: Vec<u64> = (0..waited as u64).chain([next]).collect();
    assert_eq!(got, want);
    assert_eq!(export_failed(&t).unwrap_or(0.0), 0.0);
}

/// Shutdown cannot wait forever for a destination that stays down: a refusal still standing
/// `SHUTDOWN_RETRY_FOR` after shutdown began drops the batch, counted.
#[tokio::test(start_paused = true)]
async fn a_refusal_standing_at_shutdown_drops_after_the_deadline() {
    let (b, cap, t) = batch(100, 0, 60_000);
    *cap.refuse.lock().unwrap() = Some(ConsumeError::Unavailable(
        "exporter otlp is shutting down".into(),
    ));
    b.start().await.unwrap();
    b.consume(spans(0, 3)).await.unwrap();
    let began = tokio::time::Instant::now();
    b.shutdown().await;
    let took = began.elapsed();
    assert!(
        took >= SHUTDOWN_RETRY_FOR && took < SHUTDOWN_RETRY_FOR + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
    assert_eq!(cap.items(), 0);
    assert_eq!(export_failed(&t), Some(3.0));
}

#[test]
fn config_is_checked() {
    let f = BatchFactory;
    assert!(
        f.parse_config(&serde_json::json!({"send_batch_size": 10, "send_batch_max_size": 5}))
            .is_err()
    );
    assert!(
        f.parse_config(&serde_json::json!({"metadata_keys": ["tenant"]}))
            .is_err()
    );
    assert!(
        f.parse_config(&serde_json::json!({"timeout": "1s", "send_batch_size": 5}))
            .is_ok()
    );
    let e = f
        .parse_config(&serde_json::json!({"timeout": "1 second"}))
        .err()
        .unwrap();
    assert_eq!(e.path, "timeout");
}

mod memory {
    use proptest::prelude::*;

    use super::*;
    use crate::component::ConsumeError;

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Wait(u64),
        Refuse(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..40).prop_map(Op::Push),
            2 => (1u64..300).prop_map(Op::Wait),
            1 => any::<bool>().prop_map(Op::Refuse),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever is pushed, flushed by size or timeout, refused downstream for a while
        /// (offered again; dropped, counted, only if still refused at shutdown) or flushed at
        /// shutdown: the batch holds in the memory account at least the bytes of what it
        /// buffers, every item is delivered or counted, and nothing is held once the data has
        /// left.
        #[test]
        fn held_bytes_follow_the_buffer_and_return_to_zero(
            size in 1usize..60, max in 0usize..80, ops in prop::collection::vec(op(), 1..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let max = if max != 0 && max < size { 0 } else { max };
                let (b, cap, t) = batch(size, max, 200);
                b.start().await.unwrap();
                let mut pushed = 0;
                for op in ops {
                    match op {
                        Op::Push(n) => {
                            // While refused, the buffer fills and `consume` waits for room:
                            // a client that gives up has not handed its items over.
                            let consumed = tokio::time::timeout(
                                Duration::from_secs(10),
                                b.consume(spans(pushed as u64, n)),
                            );
                            if let Ok(done) = consumed.await {
                                done.unwrap();
                                pushed += n;
                            }
                        }
                        Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        Op::Refuse(on) => {
                            *cap.refuse.lock().unwrap() =
                                on.then(|| ConsumeError::Unavailable("down".into()));
                        }
                    }
                    settle().await;
                    let buffered: usize = {
                        let st = b.shared.lock();
                        st.buffer.iter().map(Payload::memory_size).sum()
                    };
                    // Plus the batch the worker is offering (refused now, or waiting to be
                    // offered again): held until the next component takes it.
                    prop_assert!(t.memory().held() >= buffered as u64);
                }
                // Refusals lifted: within the timeout plus one backoff step everything has left
                // and nothing is held.
                *cap.refuse.lock().unwrap() = None;
                tokio::time::sleep(Duration::from_millis(1300)).await;
                settle().await;
                prop_assert_eq!(cap.items(), pushed);
                prop_assert_eq!(t.memory().held(), 0);
                b.shutdown().await;
                let dropped = t
                    .value(
                        "otelcol_processor_dropped_spans",
                        &[("processor", "batch"), ("reason", "export_failed")],
                    )
                    .unwrap_or(0.0) as usize;
                prop_assert_eq!(cap.items() + dropped, pushed);
                prop_assert_eq!(t.memory().held(), 0);
                Ok(())
            })?;
        }
    }
}

/// Under a virtual clock (offline replay) the timeout is measured in data time and nothing
/// runs by itself: a batch leaves when the clock's driver moves time to its deadline, and a
/// wall-clock wait of any length sends nothing.
#[tokio::test(start_paused = true)]
async fn under_a_virtual_clock_the_timeout_is_data_time_and_the_driver_fires_it() {
    use crate::clock::VirtualClock;
    const S: u64 = 1_000_000_000;
    let clock = VirtualClock::new(100 * S);
    let (b, cap, t) = batch(10, 0, 200);
    let b = b.with_clock(clock.clone());
    b.start().await.unwrap();
    assert_eq!(b.next_virtual_deadline(), None, "nothing held, nothing due");

    b.consume(spans(0, 3)).await.unwrap();
    assert_eq!(b.next_virtual_deadline(), Some(100 * S + 200_000_000));
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(cap.items(), 0, "no worker: wall time does not cut a batch");
    let buffered = |b: &Batch| -> u64 {
        let st = b.shared.lock();
        st.buffer.iter().map(Payload::memory_size).sum::<usize>() as u64
    };
    assert!(
        t.memory().held() > 0,
        "what waits is held in the memory account, as live"
    );
    assert_eq!(t.memory().held(), buffered(&b));

    clock.advance_to(100 * S + 150_000_000);
    b.consume(spans(3, 2)).await.unwrap();
    b.on_virtual_time().await;
    assert_eq!(cap.items(), 0, "before the first item's deadline: held");
    assert_eq!(
        b.next_virtual_deadline(),
        Some(100 * S + 200_000_000),
        "the deadline is the oldest item's"
    );

    clock.advance_to(100 * S + 200_000_000);
    b.on_virtual_time().await;
    assert_eq!(cap.batches(), [5]);
    assert_eq!(b.next_virtual_deadline(), None);
    assert_eq!(t.memory().held(), 0, "nothing held once the batch left");

    // A full batch leaves inline, by the consume that filled it, at once.
    b.consume(spans(5, 12)).await.unwrap();
    assert_eq!(cap.batches(), [5, 12]);
    assert_eq!(b.next_virtual_deadline(), None);

    // What is left at shutdown leaves then.
    b.consume(spans(17, 1)).await.unwrap();
    b.shutdown().await;
    assert_eq!(cap.batches(), [5, 12, 1]);
    assert_eq!(t.memory().held(), 0);
}
