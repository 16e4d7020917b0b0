//! The account's arithmetic and admission decisions, with a fake process source.

use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;

use super::*;

struct Fake {
    rss: AtomicU64,
    purges: AtomicUsize,
    /// Every `set_memory_pressure` call, in order.
    pressure: Mutex<Vec<bool>>,
}

impl Fake {
    fn new(rss: u64) -> Arc<Self> {
        Arc::new(Fake {
            rss: AtomicU64::new(rss),
            purges: AtomicUsize::new(0),
            pressure: Mutex::new(Vec::new()),
        })
    }
}

impl ProcessMemory for Fake {
    fn resident(&self) -> Option<u64> {
        Some(self.rss.load(Ordering::Relaxed))
    }
    fn total(&self) -> Option<u64> {
        Some(1 << 40)
    }
    fn release_free_memory(&self) {
        self.purges.fetch_add(1, Ordering::Relaxed);
    }
    fn set_memory_pressure(&self, under_pressure: bool) {
        self.pressure.lock().unwrap().push(under_pressure);
    }
}

fn limited(soft_mib: u64, hard_mib: u64) -> (Telemetry, MemoryAccount) {
    let t = Telemetry::new();
    let a = t.memory().clone();
    a.set_limits(Limits {
        soft: soft_mib * MIB,
        hard: hard_mib * MIB,
    });
    a.register_telemetry(&t);
    (t, a)
}

#[test]
fn without_limits_everything_is_admitted_and_counted() {
    let t = Telemetry::new();
    let h = t.memory().holder(&t, "otlp", "in_flight");
    let a = h.admit(usize::MAX / 4).unwrap();
    assert_eq!(t.memory().held(), (usize::MAX / 4) as u64);
    drop(a);
    assert_eq!(t.memory().held(), 0);
    assert!(!t.memory().refusing());
}

#[test]
fn admission_refuses_what_does_not_fit_and_says_why() {
    let (t, a) = limited(100, 120);
    let r = a.holder(&t, "otlp", "in_flight");
    let q = a.holder(&t, "otlp/jaeger", "queue");
    let first = r.admit(60 * MIB as usize).unwrap();
    // 60 held: 50 more does not fit under 100, 40 does.
    assert_eq!(
        r.admit(50 * MIB as usize).unwrap_err(),
        Refusal::NoRoom {
            need: 50 * MIB,
            used: 60 * MIB,
            soft: 100 * MIB
        }
    );
    let second = r.admit(40 * MIB as usize).unwrap();
    assert!(
        a.refusing(),
        "at the soft limit exactly, new data is refused"
    );
    assert!(matches!(
        r.admit(1).unwrap_err(),
        Refusal::AboveSoftLimit { .. }
    ));
    // Accepted data is held even above the limit: it must not be dropped.
    let queued = q.hold(15 * MIB as usize);
    assert!(!a.above_hard_limit());
    let more = q.hold(MIB as usize * 6);
    assert!(a.above_hard_limit());
    assert_eq!(
        t.value(
            "sluice_memory_held_bytes",
            &[("component", "otlp/jaeger"), ("kind", "queue")]
        ),
        Some((21 * MIB) as f64)
    );
    drop((first, second, queued, more));
    assert_eq!(a.held(), 0);
    assert!(r.admit(99 * MIB as usize).is_ok());
    // Larger than the soft limit: never admitted, and not worth retrying.
    let e = r.admit(101 * MIB as usize).unwrap_err();
    assert!(!e.is_retryable() && e.reason() == "too_large", "{e:?}");
}

#[test]
fn untracked_rss_counts_and_sluices_own_footprint_is_never_admissible() {
    let (t, a) = limited(100, 120);
    let fake = Fake::new(20 * MIB);
    a.set_process(fake.clone());
    let r = a.holder(&t, "otlp", "in_flight");
    let s = a.sample().unwrap();
    assert_eq!((s.rss, s.held, s.untracked), (20 * MIB, 0, 20 * MIB));
    assert_eq!(a.used(), 20 * MIB);
    // 20 MiB of footprint: a request of 85 MiB can never fit under 100.
    assert_eq!(
        r.admit(85 * MIB as usize).unwrap_err().reason(),
        "too_large"
    );
    let held = r.admit(70 * MIB as usize).unwrap();
    assert_eq!(
        a.used(),
        90 * MIB,
        "held now + untracked at the last sample"
    );
    // The next sample sees the held bytes inside RSS: untracked stays what it was.
    fake.rss.store(92 * MIB, Ordering::Relaxed);
    assert_eq!(a.sample().unwrap().untracked, 22 * MIB);
    assert_eq!(r.admit(9 * MIB as usize).unwrap_err().reason(), "no_room");
    drop(held);
    assert_eq!(
        a.used(),
        22 * MIB,
        "released at once, not at the next sample"
    );
    assert_eq!(
        t.value("sluice_memory_used_bytes", &[]),
        Some((22 * MIB) as f64)
    );
}

#[test]
fn expected_growth_is_in_use_at_once_but_never_taken_for_resident_memory() {
    let (t, a) = limited(100, 120);
    let fake = Fake::new(20 * MIB);
    a.set_process(fake.clone());
    a.sample().unwrap();
    let r = a.holder(&t, "otlp", "in_flight");
    let ts = a.holder(&t, "tail_sampling", "tail_sampling");
    let growth = a.growth_holder(&t, "tail_sampling");
    // Compacted spans: 20 MiB held, and 30 MiB more when the kept ones are released.
    ts.adjust(20 * MIB as i64);
    growth.adjust(30 * MIB as i64);
    assert_eq!(a.used(), 70 * MIB, "held + expected growth + untracked");
    assert_eq!(
        r.admit(31 * MIB as usize).unwrap_err(),
        Refusal::NoRoom {
            need: 31 * MIB,
            used: 70 * MIB,
            soft: 100 * MIB
        }
    );
    let fits = r.admit(30 * MIB as usize).unwrap();
    assert!(a.refusing());
    drop(fits);
    // RSS shows the held bytes but not the growth (not allocated yet): the untracked part is
    // still sluice's own 20 MiB, so the growth is not counted twice after a sample.
    fake.rss.store(40 * MIB, Ordering::Relaxed);
    let s = a.sample().unwrap();
    assert_eq!((s.held, s.untracked), (20 * MIB, 20 * MIB));
    assert_eq!(a.used(), 70 * MIB);
    assert_eq!(
        t.value(
            "sluice_memory_expected_growth_bytes",
            &[("component", "tail_sampling")]
        ),
        Some((30 * MIB) as f64)
    );
    // Released: the growth leaves the account, whoever holds the released data counts it.
    growth.adjust(-(30 * MIB as i64));
    ts.adjust(-(20 * MIB as i64));
    assert_eq!((a.expected_growth(), a.used()), (0, 20 * MIB));
    assert_eq!(growth.expected(), 0);
}

#[test]
fn a_spike_kept_by_the_allocator_is_purged_and_then_admitted() {
    let (t, a) = limited(100, 125);
    let fake = Fake::new(20 * MIB);
    a.set_process(fake.clone());
    a.sample();
    let r = a.holder(&t, "otlp", "in_flight");
    // The data is gone, but RSS stays at 105 MiB: the allocator kept it.
    fake.rss.store(105 * MIB, Ordering::Relaxed);
    let s = a.sample().unwrap();
    assert!(s.purged && a.refusing());
    assert_eq!(fake.purges.load(Ordering::Relaxed), 1);
    assert_eq!(t.value("sluice_memory_purges", &[]), Some(1.0));
    // At most one purge per interval.
    assert!(!a.sample().unwrap().purged);
    // The purge worked: the next sample admits again.
    fake.rss.store(24 * MIB, Ordering::Relaxed);
    assert!(!a.sample().unwrap().purged);
    assert!(!a.refusing());
    assert!(r.admit(50 * MIB as usize).is_ok());
}

#[test]
fn the_strictest_limiter_wins() {
    let a = MemoryAccount::new();
    a.set_limits(Limits {
        soft: 80,
        hard: 100,
    });
    a.set_limits(Limits { soft: 90, hard: 95 });
    assert_eq!(a.limits(), Some(Limits { soft: 80, hard: 95 }));
}

#[derive(Debug, Clone)]
enum Op {
    Hold(usize, usize),
    Admit(usize, usize),
    Resize(usize, usize),
    TryResize(usize, usize),
    Absorb(usize),
    Take(usize),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = 0usize..5_000_000;
    prop_oneof![
        (0usize..3, bytes.clone()).prop_map(|(h, b)| Op::Hold(h, b)),
        (0usize..3, bytes.clone()).prop_map(|(h, b)| Op::Admit(h, b)),
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Op::Resize(i, b)),
        (any::<usize>(), bytes).prop_map(|(i, b)| Op::TryResize(i, b)),
        any::<usize>().prop_map(Op::Absorb),
        any::<usize>().prop_map(Op::Take),
        any::<usize>().prop_map(Op::Drop),
    ]
}

proptest! {
    /// Whatever is held, resized, merged, split and dropped, in any order: the account and
    /// every holder's gauge equal the bytes of the live `Held`s, nothing is admitted past the
    /// soft limit, and everything returns to zero when the last `Held` is gone.
    #[test]
    fn held_bytes_always_equal_the_live_holds(ops in prop::collection::vec(op(), 1..80)) {
        let (t, a) = limited(8, 10);
        let holders: Vec<Holder> = ["a", "b", "c"].iter().map(|c| a.holder(&t, c, "x")).collect();
        let mut live: Vec<(usize, Held)> = Vec::new();
        for op in ops {
            let before = a.held();
            match op {
                Op::Hold(h, b) => live.push((h, holders[h].hold(b))),
                Op::Admit(h, b) => match holders[h].admit(b) {
                    Ok(x) => {
                        prop_assert!(before + b as u64 <= 8 * MIB);
                        live.push((h, x));
                    }
                    Err(_) => prop_assert!(before + b as u64 > 8 * MIB),
                },
                Op::Resize(i, b) if !live.is_empty() => {
                    let n = live.len();
                    live[i % n].1.resize(b);
                }
                Op::TryResize(i, b) if !live.is_empty() => {
                    let n = live.len();
                    let old = live[i % n].1.bytes();
                    match live[i % n].1.try_resize(b) {
                        Ok(()) => prop_assert!(b as u64 <= old || before - old + b as u64 <= 8 * MIB),
                        Err(_) => prop_assert_eq!(live[i % n].1.bytes(), old),
                    }
                }
                Op::Absorb(i) if live.len() >= 2 => {
                    let n = live.len();
                    let (h, other) = live.remove(i % n);
                    if let Some(same) = live.iter_mut().find(|(k, _)| *k == h) {
                        same.1.absorb(other);
                    } else {
                        live.push((h, other));
                    }
                }
                Op::Take(i) if !live.is_empty() => {
                    let n = live.len();
                    let h = live[i % n].0;
                    let taken = live[i % n].1.take();
                    live.push((h, taken));
                }
                Op::Drop(i) if !live.is_empty() => {
                    let n = live.len();
                    live.remove(i % n);
                }
                _ => {}
            }
            let sum: u64 = live.iter().map(|(_, x)| x.bytes()).sum();
            prop_assert_eq!(a.held(), sum);
            for (k, h) in holders.iter().enumerate() {
                let own: u64 = live.iter().filter(|(j, _)| *j == k).map(|(_, x)| x.bytes()).sum();
                prop_assert_eq!(h.held(), own as i64);
            }
        }
        live.clear();
        prop_assert_eq!(a.held(), 0);
        prop_assert!(holders.iter().all(|h| h.held() == 0));
    }
}

/// The allocator is told memory is tight from half the soft limit in use — at once when an
/// admission crosses it, without waiting for a check — and no longer tight only when a check
/// sees use below 40 % (no flapping in between); without limits it is never told.
#[test]
fn memory_pressure_turns_on_at_half_the_soft_limit_and_off_below_40_percent() {
    let (t, a) = limited(100, 120);
    let p = Fake::new(10 * MIB);
    a.set_process(p.clone());
    a.sample();
    let calls = || p.pressure.lock().unwrap().clone();
    assert_eq!(calls(), Vec::<bool>::new(), "10 MiB of 100: not tight");
    let h = a.holder(&t, "otlp", "in_flight");
    let first = h.admit(30 * MIB as usize).unwrap(); // 40 MiB in use
    assert_eq!(calls(), Vec::<bool>::new());
    let second = h.admit(15 * MIB as usize).unwrap(); // 55 MiB: tight, before any check
    assert_eq!(calls(), vec![true]);
    assert!(a.under_pressure());
    drop(second);
    p.rss.store(45 * MIB, Ordering::Relaxed); // 30 held + 15 untracked: still tight
    a.sample();
    assert_eq!(calls(), vec![true]);
    drop(first);
    p.rss.store(10 * MIB, Ordering::Relaxed);
    a.sample(); // 10 MiB
    assert_eq!(calls(), vec![true, false]);
    assert!(!a.under_pressure());
    // RSS alone (untracked memory) counts too.
    p.rss.store(70 * MIB, Ordering::Relaxed);
    a.sample();
    assert_eq!(calls(), vec![true, false, true]);

    let t = Telemetry::new();
    let unlimited = t.memory().clone();
    let p = Fake::new(500 * MIB);
    unlimited.set_process(p.clone());
    unlimited.sample();
    let _big = unlimited
        .holder(&t, "otlp", "in_flight")
        .admit(1 << 30)
        .unwrap();
    unlimited.sample();
    assert!(p.pressure.lock().unwrap().is_empty());
}
