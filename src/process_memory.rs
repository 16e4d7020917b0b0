//! The process's memory as the memory account sees it ([`ProcessMemory`]): resident set size
//! from `/proc/self/statm`, total memory from the cgroup limit (else `/proc/meminfo`), and the
//! allocator purge that gives freed memory back to the OS after a spike.
//!
//! The purge: mimalloc (the global allocator) keeps freed pages for reuse and returns them to
//! the OS lazily (`purge_delay`: mimalloc v3's default is 1 s, sluice sets 100 ms) and only
//! from the thread that owns them, when that thread next allocates or frees. After a burst,
//! idle worker threads may sit on tens of MiB of free pages for a long time: RSS stays high,
//! and a limiter reading RSS would refuse data that is long gone. `mi_collect(true)` frees a
//! thread's empty pages and purges free arena memory process-wide, but only for the calling
//! thread's own pages, so a purge is a request: the epoch below is bumped, and every runtime
//! worker collects when it next parks (idle), which it does within moments
//! ([`on_worker_park`], registered on the tokio runtime).

use std::cell::Cell;
use std::ffi::c_long;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluice_engine::memory::ProcessMemory;

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` in mimalloc.h, v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before giving it back to the OS while memory is not
/// tight.
///
/// Measured (BENCHMARKS.md, "The allocator's purge delay" and "The purge delay at 100 ms"):
/// giving every freed page back at once (0) costs 1.3–1.5× the CPU per span of keeping pages a
/// while (the next request faults in fresh pages that the kernel must zero). With today's
/// pipelines (bodies sent as slices, batches kept as parts) 100 ms costs no more CPU than
/// mimalloc's default 1 s in the pass-through, decode + delete + encode + export and the
/// gateway, and holds less: the pass-through with a 16 MiB byte queue peaked at 87–92 MiB
/// against 94–114 with 1 s. With a `memory_limiter` the delay is 0 while memory is tight.
const RELAXED_PURGE_DELAY_MS: c_long = 100;

/// mimalloc's `mi_option_allow_thp` (`mi_option_e` in mimalloc.h, v3).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Set when `MIMALLOC_PURGE_DELAY` is in the environment: the operator's choice then holds, and
/// memory pressure does not change it.
static PURGE_DELAY_PINNED: AtomicBool = AtomicBool::new(false);

/// Sets mimalloc's purge delay for when memory is not tight, unless `MIMALLOC_PURGE_DELAY` is
/// set in the environment (then that wins, always). While the memory limiter says memory is
/// tight ([`LinuxProcess`]'s `set_memory_pressure`), the delay is 0: freed pages go back at
/// once.
///
/// Measured (BENCHMARKS.md, "Memory limiter"): under overload with a 150 MiB limit, peak RSS
/// 171–175 MiB with a delay of 1,000 or 100 ms and 140 MiB with 0: freed pages that wait to
/// be purged are exactly the overshoot, because the limiter sees them as memory in use and the
/// data that replaces them arrives in the meantime.
///
/// Also turns transparent huge pages off ([`disable_transparent_huge_pages`]).
pub fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        PURGE_DELAY_PINNED.store(true, Ordering::Relaxed);
    } else {
        set_purge_delay(RELAXED_PURGE_DELAY_MS);
    }
    disable_transparent_huge_pages();
}

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is in the
/// environment (the operator's choice then holds).
///
/// mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`); a huge page is zeroed and
/// counted in RSS whole (2 MiB) at its first touch, and purging part of one splits it.
/// sluice's memory is freed and reused at a high rate (requests, batches, tail sampling's
/// releases), so huge pages mostly held memory nobody used. Measured (BENCHMARKS.md,
/// "Transparent huge pages off"): peak RSS of the end-to-end pass-through 89 -> 52 MiB, load
/// balancing 90 -> 62, the agent 487 -> 378, the gateway 283 -> 250; the gateway's CPU per span
/// 0.91× (12 pairs), elsewhere the same within this machine's noise.
///
/// The option stops mimalloc's `MADV_HUGEPAGE` on what it maps from now on; its first arena
/// was mapped before `main`, and where the system's THP mode is `always` every aligned mapping
/// gets huge pages regardless, so `PR_SET_THP_DISABLE` turns them off for the whole process at
/// fault time, as mimalloc itself does when the option comes from the environment.
fn disable_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: setting an option is a plain store in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only sets a flag on
    // this process's memory map; a kernel without it answers EINVAL, which changes nothing.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn set_purge_delay(ms: c_long) {
    // SAFETY: setting an option is a plain store in mimalloc's option table; mimalloc reads
    // `purge_delay` each time it schedules a purge, so a change applies to what is freed next.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Bumped by every purge request; each thread collects once per new value.
static PURGE_EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SEEN_EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// Called by each tokio worker thread when it parks: collects this thread's free pages if a
/// purge was asked for since it last did. One relaxed load when there is nothing to do.
pub fn on_worker_park() {
    let epoch = PURGE_EPOCH.load(Ordering::Relaxed);
    if SEEN_EPOCH.with(|s| s.replace(epoch)) != epoch {
        collect_this_thread();
    }
}

fn collect_this_thread() {
    // SAFETY: mi_collect only walks and frees this thread's allocator state; it is safe to
    // call at any time from any thread that uses mimalloc.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

pub struct LinuxProcess;

impl ProcessMemory for LinuxProcess {
    fn resident(&self) -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page_size())
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

    fn release_free_memory(&self) {
        PURGE_EPOCH.fetch_add(1, Ordering::Relaxed);
        collect_this_thread();
    }

    fn set_memory_pressure(&self, under_pressure: bool) {
        if !PURGE_DELAY_PINNED.load(Ordering::Relaxed) {
            set_purge_delay(if under_pressure {
                0
            } else {
                RELAXED_PURGE_DELAY_MS
            });
        }
    }
}

fn page_size() -> u64 {
    // statm counts pages; every Linux platform sluice targets uses 4 KiB base pages.
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory pressure switches mimalloc's purge delay between 0 and the relaxed delay
    /// (mimalloc reads the option where it schedules a purge, so this is what it uses next).
    #[test]
    fn memory_pressure_switches_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // pinned by the environment: nothing switches, by design
        }
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        configure_allocator();
        assert_eq!(get(), RELAXED_PURGE_DELAY_MS);
        LinuxProcess.set_memory_pressure(true);
        assert_eq!(get(), 0);
        LinuxProcess.set_memory_pressure(false);
        assert_eq!(get(), RELAXED_PURGE_DELAY_MS);
    }

    /// The option indexes above are mimalloc's: a child process (this test binary, running
    /// only this test) gets both options through the environment, which mimalloc reads by
    /// name, and reads them back by our indexes. A libmimalloc-sys update that renumbers the
    /// options fails here instead of silently setting another option.
    #[test]
    fn the_option_indexes_are_mimallocs_own() {
        const CHILD: &str = "SLUICE_TEST_MIMALLOC_OPTIONS_CHILD";
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        if std::env::var_os(CHILD).is_some() {
            assert_eq!(get(MI_OPTION_PURGE_DELAY), 1234, "purge_delay's index");
            assert_eq!(get(MI_OPTION_ALLOW_THP), 0, "allow_thp's index");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "process_memory::tests::the_option_indexes_are_mimallocs_own",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", "1234")
            .env("MIMALLOC_ALLOW_THP", "0")
            .output()
            .expect("the child runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }

    /// After `configure_allocator` the process has transparent huge pages off (the flag the
    /// kernel checks at each fault), unless the environment chose.
    #[test]
    fn transparent_huge_pages_are_off_after_configuring() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return; // the operator's choice holds, by design
        }
        configure_allocator();
        // SAFETY: PR_GET_THP_DISABLE takes no pointer; it returns the flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
        let allow = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) };
        assert_eq!(allow, 0);
    }

    /// The purge gives a freed spike back: RSS after freeing 256 MiB of touched memory and
    /// collecting is well below RSS while it was held (on this thread, which owns the pages).
    #[test]
    fn a_freed_spike_leaves_rss_after_a_purge() {
        let p = LinuxProcess;
        let before = p.resident().unwrap();
        let mut blocks: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 1 << 20]).collect();
        blocks.iter_mut().for_each(|b| b[0] = 2);
        let held = p.resident().unwrap();
        assert!(held > before + 200 * (1 << 20), "{before} -> {held}");
        drop(blocks);
        p.release_free_memory();
        let after = p.resident().unwrap();
        assert!(
            after < before + 64 * (1 << 20),
            "RSS {} MiB before, {} MiB held, {} MiB after the purge",
            before >> 20,
            held >> 20,
            after >> 20
        );
        assert!(p.total().unwrap() > 0);
    }
}
