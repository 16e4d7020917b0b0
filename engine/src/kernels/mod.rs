//! Column kernels: the operations processors are compiled to.
//!
//! A kernel takes Arrow columns (usually one table of a [`crate::Payload`]) and returns new
//! columns; it never walks a span as an object. Predicates that depend only on a string key or
//! name run once per distinct dictionary value, not once per row, and the per-row work is a
//! gather, a filter or an interleave over whole columns. Where an operation is per row by
//! nature (a regex over each value, a SHA-256 of each value, a number parsed from each string),
//! the kernel says so in its doc and does that work without a heap allocation per row.
//!
//! - [`attributes`]: kernels over attribute tables ([`crate::schema::attrs_schema`]): delete,
//!   keep, limit, insert / update / upsert a key for a set of parents, look up a key's typed
//!   value for every parent, hash, convert, extract.
//! - [`nulls`]: all-null arrays that share one zeroed buffer instead of allocating.
//! - [`ranges`]: gathers of row runs, the copying half of every rebuild.
//! - [`routing`]: the Collector's consistent-hash ring and the split of a payload by backend
//!   (the `loadbalancing` exporter): one hash per routing key, one filter per backend.

pub mod attributes;
pub mod nulls;
pub mod ranges;
pub mod routing;
