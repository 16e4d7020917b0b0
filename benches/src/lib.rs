//! Shared helpers for sluice benchmarks.
