//! The process-wide memory account: the bytes sluice holds, by component, and the admission
//! decision the `memory_limiter` makes with them.
//!
//! # Why an account and not only RSS
//!
//! The Collector's memory limiter samples the Go heap every `check_interval` and refuses data
//! while it is above the soft limit. Sampling alone lets a burst through between two samples
//! (the limit overshoots), and the sample cannot tell data held from memory the allocator keeps
//! after a spike (the limiter refuses long after the data is gone). sluice knows what it holds:
//!
//! - **held**: bytes of payloads that components keep — `batch` buffers, exporter sending
//!   queues, tail-sampling segments — and **in flight**: what receivers reserve for a request
//!   (its body and an estimate of its decoded size) *before* reading and decoding it, grown to
//!   the decoded size if the estimate was short, and released when the pipeline returns. Each holder is a
//!   [`Holder`]; what it keeps is a [`Held`], which gives its bytes back when dropped, so
//!   bytes return to the account when data leaves (sent, dropped or freed) on every path.
//! - **untracked**: what RSS shows beyond that (code, runtime, connection buffers, encodings
//!   in progress, allocator slack), measured at every sample as `RSS − held` (never below 0).
//! - **expected growth**: what data already accepted will grow by before it leaves, which RSS
//!   cannot show yet. `tail_sampling` stores spans compactly (~0.4× their Arrow size) and
//!   releases kept traces as Arrow payloads again: under overload into a slow exporter, the
//!   queue filled with more than the limiter had admitted, and RSS overshot the limit by the
//!   difference (BENCHMARKS.md, "Expected growth"). Refusing new requests cannot shrink data
//!   already accepted, so the growth is counted as in use from the moment the data is
//!   compacted ([`GrowthHolder`]), and given back when the data is released.
//!
//! Memory in use is `held now + expected growth now + untracked at the last sample`: held
//! bytes are seen at once,
//! RSS corrects for the rest every `check_interval`. A request is admitted only if its
//! reservation fits under the soft limit; above it, requests are refused before their body is
//! read, so refused load costs almost nothing. When the untracked part grows (a spike freed but
//! kept by the allocator), the account asks the process to give free memory back to the OS
//! ([`ProcessMemory::release_free_memory`]), so the next sample tells the truth.
//!
//! The engine does no I/O: RSS, total memory and the allocator purge come from a
//! [`ProcessMemory`] the binary injects ([`MemoryAccount::set_process`]). Without one (tests,
//! embedders) the account limits by held bytes alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::telemetry::{Counter, Gauge, Telemetry};

pub const MIB: u64 = 1024 * 1024;

/// Where the process's memory figures come from, and how to give memory back (injected by the
/// binary: `/proc`, cgroups, the allocator).
pub trait ProcessMemory: Send + Sync + 'static {
    /// Resident set size now, in bytes.
    fn resident(&self) -> Option<u64>;
    /// Memory available to the process in total (cgroup limit, else the machine's): what the
    /// `*_percentage` settings are a share of.
    fn total(&self) -> Option<u64>;
    /// Asks the allocator to return free memory to the OS. May take effect asynchronously
    /// (each thread purges its own caches); the next [`ProcessMemory::resident`] shows it.
    fn release_free_memory(&self) {}
    /// Tells the allocator whether memory is tight: while it is, freed memory should go back to
    /// the OS at once (so RSS, which the limiter reads, follows the data down); otherwise it
    /// may keep freed pages for a while (reusing them is cheaper than faulting in fresh,
    /// zeroed pages). Called when the state changes.
    fn set_memory_pressure(&self, _under_pressure: bool) {}
}

/// The limits in bytes: refuse new data at `soft`; `hard` is the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub hard: u64,
    pub soft: u64,
}

/// Why a request was not admitted. Every variant but [`Refusal::TooLarge`] is temporary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Memory in use is at or above the soft limit: nothing new is taken until it drops.
    #[error(
        "data refused due to high memory usage: {} MiB in use, soft limit {} MiB; retry later",
        .used / MIB,
        .soft / MIB
    )]
    AboveSoftLimit { used: u64, soft: u64 },
    /// The request's reservation does not fit under the soft limit now.
    #[error(
        "data refused due to high memory usage: this request needs ~{} MiB, {} MiB in use, soft limit {} MiB; retry later",
        .need.div_ceil(MIB),
        .used / MIB,
        .soft / MIB
    )]
    NoRoom { need: u64, used: u64, soft: u64 },
    /// The request alone needs more than the soft limit leaves beside sluice's own footprint:
    /// it would never be admitted, so retrying is pointless.
    #[error(
        "request too large for the memory limit: it needs ~{} MiB, at most {} MiB can ever be admitted (soft limit {} MiB)",
        .need.div_ceil(MIB),
        .room / MIB,
        .soft / MIB
    )]
    TooLarge { need: u64, room: u64, soft: u64 },
}

impl Refusal {
    /// The `reason` label of `sluice_memory_refused_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::AboveSoftLimit { .. } => "above_soft_limit",
            Refusal::NoRoom { .. } => "no_room",
            Refusal::TooLarge { .. } => "too_large",
        }
    }
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Refusal::TooLarge { .. })
    }
}

/// The `reason` labels of refusals, for registering counters up front.
pub const REFUSAL_REASONS: [&str; 3] = ["above_soft_limit", "no_room", "too_large"];

/// `sluice_memory_refused_requests{receiver, transport, reason}`: what a receiver that admits
/// requests by the account refused, by reason (a counter per reason, registered up front).
#[derive(Clone)]
pub struct RefusedRequests(std::collections::BTreeMap<&'static str, Counter>);

impl RefusedRequests {
    pub fn new(t: &Telemetry, receiver: &str, transport: &str) -> Self {
        RefusedRequests(
            REFUSAL_REASONS
                .into_iter()
                .map(|reason| {
                    let counter = t.counter(
                        "sluice_memory_refused_requests",
                        "Requests refused by the memory limiter before decoding (above the soft limit, no room for the request, too large for the limit) (sluice)",
                        &[("receiver", receiver), ("transport", transport), ("reason", reason)],
                    );
                    (reason, counter)
                })
                .collect(),
        )
    }

    /// Counts one refusal.
    pub fn count(&self, r: &Refusal) {
        if let Some(c) = self.0.get(r.reason()) {
            c.add(1);
        }
    }
}

/// The process-wide account. Cheap to clone (one `Arc`); every component of a process shares
/// the one that [`Telemetry`] carries.
#[derive(Clone, Default)]
pub struct MemoryAccount(Arc<Inner>);

struct Inner {
    /// Bytes held and reserved, all holders.
    held: AtomicU64,
    /// Bytes the data held will grow by before it leaves (not resident yet), all holders.
    growth: AtomicU64,
    /// `u64::MAX` until a `memory_limiter` sets limits.
    soft: AtomicU64,
    hard: AtomicU64,
    /// RSS beyond the held bytes at the last sample.
    untracked: AtomicU64,
    /// The smallest untracked figure seen: sluice's own footprint with no data, which no
    /// request can use.
    footprint: AtomicU64,
    rss: AtomicU64,
    refusing: AtomicBool,
    /// Whether the allocator was last told memory is tight ([`ProcessMemory::set_memory_pressure`]).
    pressure: AtomicBool,
    process: OnceLock<Arc<dyn ProcessMemory>>,
    last_purge: Mutex<Option<Instant>>,
    telemetry: OnceLock<Metrics>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            held: AtomicU64::new(0),
            growth: AtomicU64::new(0),
            soft: AtomicU64::new(u64::MAX),
            hard: AtomicU64::new(u64::MAX),
            untracked: AtomicU64::new(0),
            footprint: AtomicU64::new(u64::MAX),
            rss: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            pressure: AtomicBool::new(false),
            process: OnceLock::new(),
            last_purge: Mutex::new(None),
            telemetry: OnceLock::new(),
        }
    }
}

struct Metrics {
    purges: Counter,
}

/// What one sample saw (returned for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub rss: u64,
    pub held: u64,
    pub untracked: u64,
    /// Whether this sample asked the allocator to give memory back.
    pub purged: bool,
}

/// How long after one purge the next may be asked for.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// Memory is tight from this share of the soft limit in use (in per mille) ...
const PRESSURE_ON_PER_MILLE: u64 = 500;
/// ... until use falls below this share (a gap, so the state does not flap at the boundary).
const PRESSURE_OFF_PER_MILLE: u64 = 400;

impl MemoryAccount {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets where RSS and total memory come from (the binary does, once, before building).
    /// Later calls are ignored.
    pub fn set_process(&self, process: Arc<dyn ProcessMemory>) {
        let _ = self.0.process.set(process);
    }

    pub fn process(&self) -> Option<&Arc<dyn ProcessMemory>> {
        self.0.process.get()
    }

    /// Applies a `memory_limiter`'s limits. With several limiters in one process the
    /// strictest wins: memory is one budget.
    pub fn set_limits(&self, limits: Limits) {
        self.0.soft.fetch_min(limits.soft, Ordering::Relaxed);
        self.0.hard.fetch_min(limits.hard, Ordering::Relaxed);
    }

    /// The limits in force, if a `memory_limiter` set any.
    pub fn limits(&self) -> Option<Limits> {
        let soft = self.0.soft.load(Ordering::Relaxed);
        (soft != u64::MAX).then(|| Limits {
            soft,
            hard: self.0.hard.load(Ordering::Relaxed),
        })
    }

    /// Bytes held and reserved now, all holders.
    pub fn held(&self) -> u64 {
        self.0.held.load(Ordering::Relaxed)
    }

    /// Bytes the data held now will grow by before it leaves, all holders.
    pub fn expected_growth(&self) -> u64 {
        self.0.growth.load(Ordering::Relaxed)
    }

    /// Memory in use as the limiter sees it: held now, the growth expected of it, and what RSS
    /// showed beyond the held bytes at the last sample.
    pub fn used(&self) -> u64 {
        self.held()
            .saturating_add(self.expected_growth())
            .saturating_add(self.0.untracked.load(Ordering::Relaxed))
    }

    /// Whether new data is refused now (memory in use at or above the soft limit).
    pub fn refusing(&self) -> bool {
        self.used() >= self.0.soft.load(Ordering::Relaxed)
    }

    /// Whether memory in use is at or above the hard limit.
    pub fn above_hard_limit(&self) -> bool {
        self.used() >= self.0.hard.load(Ordering::Relaxed)
    }

    /// A holder of bytes for `component` (its id) of `kind` (`in_flight`, `batch`, `queue`,
    /// `tail_sampling`, ...), shown as `sluice_memory_held_bytes{component, kind}`.
    pub fn holder(&self, t: &Telemetry, component: &str, kind: &'static str) -> Holder {
        Holder {
            account: self.clone(),
            gauge: t.gauge(
                "sluice_memory_held_bytes",
                "Bytes of data held by a component (payloads in buffers and queues, requests in flight), as the memory limiter counts them (sluice)",
                &[("component", component), ("kind", kind)],
            ),
        }
    }

    /// A holder of the growth expected of `component`'s data, shown as
    /// `sluice_memory_expected_growth_bytes{component}`.
    pub fn growth_holder(&self, t: &Telemetry, component: &str) -> GrowthHolder {
        GrowthHolder {
            account: self.clone(),
            gauge: t.gauge(
                "sluice_memory_expected_growth_bytes",
                "Bytes that data a component holds will grow by before it leaves (tail_sampling's compacted spans, released as Arrow payloads), counted as in use by the memory limiter; not resident yet (sluice)",
                &[("component", component)],
            ),
        }
    }

    /// Registers the account's own series (once per account): limits, memory in use, the
    /// untracked part, the limiter's state and purges.
    pub fn register_telemetry(&self, t: &Telemetry) {
        self.0.telemetry.get_or_init(|| {
            for (limit, which) in [("soft", true), ("hard", false)] {
                let a = self.clone();
                t.gauge_fn(
                    "sluice_memory_limit_bytes",
                    "The memory limiter's limits in bytes (sluice)",
                    &[("limit", limit)],
                    move || a.limits().map_or(0, |l| if which { l.soft } else { l.hard }) as f64,
                );
            }
            let a = self.clone();
            t.gauge_fn(
                "sluice_memory_used_bytes",
                "Memory in use as the memory limiter sees it: bytes held now, the growth expected of them, and RSS beyond them at the last check (sluice)",
                &[],
                move || a.used() as f64,
            );
            let a = self.clone();
            t.gauge_fn(
                "sluice_memory_untracked_bytes",
                "RSS beyond the bytes held, at the last check: code, runtime, buffers, allocator slack (sluice)",
                &[],
                move || a.0.untracked.load(Ordering::Relaxed) as f64,
            );
            let a = self.clone();
            t.gauge_fn(
                "sluice_memory_limiter_refusing",
                "1 while the memory limiter refuses new data, else 0 (sluice)",
                &[],
                move || f64::from(u8::from(a.refusing())),
            );
            Metrics {
                purges: t.counter(
                    "sluice_memory_purges",
                    "Times the memory limiter asked the allocator to return free memory to the OS (sluice)",
                    &[],
                ),
            }
        });
    }

    /// Adds `bytes` if they fit under the soft limit (always, without limits).
    fn try_add(&self, bytes: u64) -> Result<(), Refusal> {
        let a = &self.0;
        let soft = a.soft.load(Ordering::Relaxed);
        if soft == u64::MAX {
            a.held.fetch_add(bytes, Ordering::Relaxed);
            return Ok(());
        }
        let footprint = match a.footprint.load(Ordering::Relaxed) {
            u64::MAX => 0,
            f => f,
        };
        let room = soft.saturating_sub(footprint);
        if bytes > room {
            return Err(Refusal::TooLarge {
                need: bytes,
                room,
                soft,
            });
        }
        // Not resident, but in use: both move only by what the account is told.
        let untracked = a
            .untracked
            .load(Ordering::Relaxed)
            .saturating_add(a.growth.load(Ordering::Relaxed));
        let mut held = a.held.load(Ordering::Relaxed);
        loop {
            let used = held.saturating_add(untracked);
            if used >= soft {
                return Err(Refusal::AboveSoftLimit { used, soft });
            }
            if used.saturating_add(bytes) > soft {
                return Err(Refusal::NoRoom {
                    need: bytes,
                    used,
                    soft,
                });
            }
            match a.held.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // A burst need not wait for the next check to make the allocator give
                    // freed memory back (turning it off again waits for a check).
                    if !a.pressure.load(Ordering::Relaxed)
                        && (used + bytes) as u128 * 1000
                            >= soft as u128 * PRESSURE_ON_PER_MILLE as u128
                    {
                        self.update_pressure();
                    }
                    return Ok(());
                }
                Err(now) => held = now,
            }
        }
    }

    fn add(&self, bytes: u64) {
        self.0.held.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: u64) {
        // Every subtraction pairs with an earlier addition (Held's invariant), so this never
        // wraps; saturate anyway rather than trust it with the limiter's view.
        let _ = self
            .0
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(bytes))
            });
    }

    /// Samples RSS (what the limiter's ticker does every `check_interval`): updates the
    /// untracked part, logs state changes, and asks for a purge when RSS holds much more than
    /// the data does.
    pub fn sample(&self) -> Option<Sample> {
        let a = &self.0;
        let rss = a.process.get()?.resident()?;
        let held = self.held();
        let untracked = rss.saturating_sub(held);
        a.rss.store(rss, Ordering::Relaxed);
        a.untracked.store(untracked, Ordering::Relaxed);
        a.footprint.fetch_min(untracked, Ordering::Relaxed);
        let purged = self.maybe_purge(rss, untracked);
        self.update_pressure();
        let now = self.refusing();
        if a.refusing.swap(now, Ordering::Relaxed) != now {
            let soft = a.soft.load(Ordering::Relaxed);
            if now {
                tracing::warn!(
                    rss_mib = rss / MIB,
                    held_mib = held / MIB,
                    soft_limit_mib = soft / MIB,
                    "memory usage above soft limit: refusing data"
                );
            } else {
                tracing::info!(
                    rss_mib = rss / MIB,
                    held_mib = held / MIB,
                    "memory usage back below soft limit: accepting data"
                );
            }
        }
        if rss >= a.hard.load(Ordering::Relaxed) {
            tracing::warn!(
                rss_mib = rss / MIB,
                held_mib = held / MIB,
                hard_limit_mib = a.hard.load(Ordering::Relaxed) / MIB,
                "memory usage above hard limit"
            );
        }
        Some(Sample {
            rss,
            held,
            untracked,
            purged,
        })
    }

    /// Tells the process when memory becomes tight and when it stops being tight: from half the
    /// soft limit in use, freed memory goes back to the OS at once.
    ///
    /// Why not always: giving every freed page back at once and faulting fresh zeroed pages in
    /// for the next request cost 1.3–1.5× the CPU per span of keeping them a while, in the
    /// pass-through and in decode + delete + encode + export (BENCHMARKS.md, "The allocator's
    /// purge delay"); and without a limiter nothing reads RSS to decide. Why from half the
    /// limit: with a delay the limiter reads freed pages as memory in use, and under overload
    /// new data takes their place before the next check: the overshoot measured with a 1 s
    /// delay.
    fn update_pressure(&self) {
        let a = &self.0;
        let Some(limits) = self.limits() else {
            return;
        };
        let used = self.used();
        let was = a.pressure.load(Ordering::Relaxed);
        let threshold = if was {
            PRESSURE_OFF_PER_MILLE
        } else {
            PRESSURE_ON_PER_MILLE
        };
        let now = used as u128 * 1000 >= limits.soft as u128 * threshold as u128;
        // Two threads deciding at once may tell the process in either order; the next check
        // (every `check_interval`) sets it right.
        if now != was && a.pressure.swap(now, Ordering::Relaxed) != now {
            if let Some(p) = a.process.get() {
                p.set_memory_pressure(now);
            }
            tracing::debug!(
                used_mib = used / MIB,
                soft_limit_mib = limits.soft / MIB,
                under_pressure = now,
                "memory limiter: allocator told memory is {}",
                if now { "tight" } else { "no longer tight" }
            );
        }
    }

    /// Whether the allocator was last told memory is tight.
    pub fn under_pressure(&self) -> bool {
        self.0.pressure.load(Ordering::Relaxed)
    }

    /// Asks the allocator to give memory back when the part of RSS that is not data has grown
    /// well beyond sluice's footprint (a spike was freed but is still resident) and the
    /// process is near its limit; at most once per [`PURGE_INTERVAL`].
    fn maybe_purge(&self, rss: u64, untracked: u64) -> bool {
        let a = &self.0;
        let Some(limits) = self.limits() else {
            return false;
        };
        let footprint = a.footprint.load(Ordering::Relaxed);
        let spike = limits.hard - limits.soft;
        let grown = untracked.saturating_sub(footprint) > (spike / 4).max(4 * MIB);
        let near_limit = rss >= limits.soft / 2;
        if !(grown && near_limit) {
            return false;
        }
        {
            let mut last = a.last_purge.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < PURGE_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        // Buffers the engine keeps for reuse are free memory too: freed first, so the
        // allocator can give their pages back with the rest.
        crate::payload::part_buffers::release_idle();
        crate::otlp::encode::encoded_buffers::release_idle();
        if let Some(p) = a.process.get() {
            p.release_free_memory();
        }
        if let Some(m) = a.telemetry.get() {
            m.purges.add(1);
        }
        tracing::debug!(
            rss_mib = rss / MIB,
            untracked_mib = untracked / MIB,
            "memory limiter: asked the allocator to return free memory"
        );
        true
    }
}

/// One component's expected growth (`sluice_memory_expected_growth_bytes{component}`): bytes
/// its data will need beyond what it holds now, before it leaves. Adjusted by deltas; the
/// holder pairs every increase with decreases that undo it.
#[derive(Clone)]
pub struct GrowthHolder {
    account: MemoryAccount,
    gauge: Gauge,
}

impl GrowthHolder {
    pub fn adjust(&self, delta: i64) {
        let growth = &self.account.0.growth;
        if delta >= 0 {
            growth.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            // Paired with earlier additions; saturate rather than wrap the limiter's view.
            let _ = growth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |g| {
                Some(g.saturating_sub(delta.unsigned_abs()))
            });
        }
        self.gauge.add(delta);
    }

    /// What this holder expects now.
    pub fn expected(&self) -> i64 {
        self.gauge.get()
    }
}

/// One component's share of the account (`sluice_memory_held_bytes{component, kind}`).
#[derive(Clone)]
pub struct Holder {
    account: MemoryAccount,
    gauge: Gauge,
}

impl Holder {
    /// Holds `bytes` unconditionally: for data already accepted, which must not be dropped.
    pub fn hold(&self, bytes: usize) -> Held {
        let bytes = bytes as u64;
        self.account.add(bytes);
        self.gauge.add(bytes as i64);
        Held {
            holder: self.clone(),
            bytes,
        }
    }

    /// Reserves `bytes` for new data if they fit under the soft limit (admission).
    pub fn admit(&self, bytes: usize) -> Result<Held, Refusal> {
        let bytes = bytes as u64;
        self.account.try_add(bytes)?;
        self.gauge.add(bytes as i64);
        Ok(Held {
            holder: self.clone(),
            bytes,
        })
    }

    /// Nothing held yet (to grow).
    pub fn none(&self) -> Held {
        Held {
            holder: self.clone(),
            bytes: 0,
        }
    }

    /// Changes what this holder holds by `delta` bytes, for holders that track their bytes
    /// as deltas (tail sampling's buckets grow on arrival, shrink when sealed and go when
    /// decided); the caller pairs every increase with decreases that undo it.
    pub fn adjust(&self, delta: i64) {
        if delta >= 0 {
            self.account.add(delta as u64);
        } else {
            self.account.sub(delta.unsigned_abs());
        }
        self.gauge.add(delta);
    }

    pub fn account(&self) -> &MemoryAccount {
        &self.account
    }

    /// What this holder holds now.
    pub fn held(&self) -> i64 {
        self.gauge.get()
    }
}

/// Bytes held in the account, given back when dropped.
pub struct Held {
    holder: Holder,
    bytes: u64,
}

impl Held {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Resizes to `bytes`; growing must fit under the soft limit (else nothing changes).
    pub fn try_resize(&mut self, bytes: usize) -> Result<(), Refusal> {
        let bytes = bytes as u64;
        if bytes > self.bytes {
            self.holder.account.try_add(bytes - self.bytes)?;
            self.holder.gauge.add((bytes - self.bytes) as i64);
            self.bytes = bytes;
        } else {
            self.resize(bytes as usize);
        }
        Ok(())
    }

    /// Resizes to `bytes` unconditionally.
    pub fn resize(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes >= self.bytes {
            self.holder.account.add(bytes - self.bytes);
            self.holder.gauge.add((bytes - self.bytes) as i64);
        } else {
            self.holder.account.sub(self.bytes - bytes);
            self.holder.gauge.add(-((self.bytes - bytes) as i64));
        }
        self.bytes = bytes;
    }

    /// Takes over `other`'s bytes (both must belong to the same holder).
    pub fn absorb(&mut self, mut other: Held) {
        debug_assert!(Arc::ptr_eq(&self.holder.account.0, &other.holder.account.0));
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Moves `bytes` of this one's bytes (at most all of them) into a new `Held`.
    pub fn split(&mut self, bytes: usize) -> Held {
        let moved = (bytes as u64).min(self.bytes);
        self.bytes -= moved;
        Held {
            holder: self.holder.clone(),
            bytes: moved,
        }
    }

    /// Moves the bytes out into a new `Held`, leaving this one empty.
    pub fn take(&mut self) -> Held {
        Held {
            holder: self.holder.clone(),
            bytes: std::mem::take(&mut self.bytes),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.holder.account.sub(self.bytes);
            self.holder.gauge.add(-(self.bytes as i64));
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("bytes", &self.bytes).finish()
    }
}

#[cfg(test)]
mod tests;
