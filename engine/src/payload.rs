//! [`Payload`]: the unit of data that flows through a pipeline — one signal's tables (see
//! [`crate::schema`]) plus where the data came from.

use std::net::SocketAddr;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute;
use arrow::datatypes::UInt32Type;

use crate::schema::{Signal, Table, col};

/// One signal's worth of telemetry as normalized Arrow tables.
///
/// Cloning is cheap (Arrow buffers are reference counted), which is what fan-out to several
/// pipelines relies on.
#[derive(Clone, Debug)]
pub struct Payload {
    signal: Signal,
    /// Indexed by `Table as usize`; only the signal's own tables are `Some`.
    tables: [Option<RecordBatch>; Table::COUNT],
    /// The peer that sent this data (the receiving socket's remote address), kept for
    /// enrichment such as `k8sattributes`, which runs before `batch`. A concat of payloads from
    /// different peers has no single origin and gets `None`.
    pub origin: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("table {table:?} is not part of a {signal:?} payload")]
    WrongTable { signal: Signal, table: Table },
    #[error("table {table:?}: schema does not match the sluice schema: {detail}")]
    Schema { table: Table, detail: String },
    #[error("table {table:?}: {detail}")]
    Invariant { table: Table, detail: String },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Payload {
    /// A payload of `signal` with every table present and empty.
    pub fn empty(signal: Signal) -> Self {
        let mut tables: [Option<RecordBatch>; Table::COUNT] = Default::default();
        for &t in signal.tables() {
            tables[t as usize] = Some(RecordBatch::new_empty(t.schema()));
        }
        Payload {
            signal,
            tables,
            origin: None,
        }
    }

    /// Builds a payload from complete tables (one per table of `signal`, any order).
    /// Checks schemas, not invariants: call [`Payload::validate`] for those.
    pub fn from_tables(
        signal: Signal,
        tables: impl IntoIterator<Item = (Table, RecordBatch)>,
    ) -> Result<Self, PayloadError> {
        let mut p = Payload::empty(signal);
        for (t, batch) in tables {
            p.set(t, batch)?;
        }
        Ok(p)
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The table `t`. Panics if `t` is not a table of this payload's signal: that is a
    /// programming error, never a data error.
    pub fn table(&self, t: Table) -> &RecordBatch {
        self.tables[t as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("{t:?} is not a table of a {:?} payload", self.signal))
    }

    /// Replaces table `t`; its schema must be exactly the sluice schema of `t`.
    pub fn set(&mut self, t: Table, batch: RecordBatch) -> Result<(), PayloadError> {
        if self.tables[t as usize].is_none() {
            return Err(PayloadError::WrongTable {
                signal: self.signal,
                table: t,
            });
        }
        if batch.schema().fields() != t.schema().fields() {
            return Err(PayloadError::Schema {
                table: t,
                detail: format!("got {:?}", batch.schema().fields()),
            });
        }
        self.tables[t as usize] = Some(batch);
        Ok(())
    }

    /// The tables of this payload, parents before children.
    pub fn tables(&self) -> impl Iterator<Item = (Table, &RecordBatch)> {
        self.signal.tables().iter().map(|&t| (t, self.table(t)))
    }

    /// Spans, data points or log records: what self-telemetry counts as items.
    pub fn item_count(&self) -> usize {
        self.signal
            .item_tables()
            .iter()
            .map(|&t| self.table(t).num_rows())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.item_count() == 0
    }

    /// Bytes of Arrow buffers held by this payload (shared buffers are counted once per use).
    pub fn memory_size(&self) -> usize {
        self.tables().map(|(_, b)| b.get_array_memory_size()).sum()
    }

    /// The `parent_id` column of child table `t`.
    pub fn parent_ids(&self, t: Table) -> &UInt32Array {
        parent_ids(self.table(t))
    }

    /// Checks the data-model invariants: every child's `parent_id` is a row of its parent
    /// table, and every child table is sorted by `parent_id`.
    pub fn validate(&self) -> Result<(), PayloadError> {
        for (t, batch) in self.tables() {
            let Some(parent) = t.parent() else { continue };
            let parent_rows = self.table(parent).num_rows() as u32;
            let ids = parent_ids(batch);
            if ids.null_count() > 0 {
                return Err(invariant(t, "parent_id has nulls"));
            }
            let mut prev = 0u32;
            for &id in ids.values() {
                if id >= parent_rows {
                    return Err(invariant(
                        t,
                        format!("parent_id {id} out of range ({parent_rows} {parent:?} rows)"),
                    ));
                }
                if id < prev {
                    return Err(invariant(t, "not sorted by parent_id"));
                }
                prev = id;
            }
        }
        Ok(())
    }

    /// Concatenates payloads of one signal into one, rebasing parent ids. Order is kept, so
    /// the invariants hold if they held for each input.
    pub fn concat(signal: Signal, parts: &[Payload]) -> Result<Payload, PayloadError> {
        let mut out = Payload::empty(signal);
        if parts.is_empty() {
            return Ok(out);
        }
        let origin = parts[0].origin;
        out.origin = if parts.iter().all(|p| p.origin == origin) {
            origin
        } else {
            None
        };
        for &t in signal.tables() {
            let mut batches = Vec::with_capacity(parts.len());
            let mut parent_offset = 0u32;
            for p in parts {
                if p.signal != signal {
                    return Err(PayloadError::WrongTable {
                        signal: p.signal,
                        table: t,
                    });
                }
                let batch = p.table(t);
                match t.parent() {
                    Some(_) if parent_offset > 0 => {
                        batches.push(add_to_parent_ids(batch, parent_offset)?);
                    }
                    _ => batches.push(batch.clone()),
                }
                if let Some(parent) = t.parent() {
                    parent_offset += p.table(parent).num_rows() as u32;
                }
            }
            out.tables[t as usize] = Some(compute::concat_batches(&t.schema(), &batches)?);
        }
        Ok(out)
    }
}

fn invariant(table: Table, detail: impl Into<String>) -> PayloadError {
    PayloadError::Invariant {
        table,
        detail: detail.into(),
    }
}

/// The `parent_id` column of a child table's batch.
pub fn parent_ids(batch: &RecordBatch) -> &UInt32Array {
    batch
        .column_by_name(col::PARENT_ID)
        .expect("child tables have parent_id")
        .as_primitive::<UInt32Type>()
}

fn add_to_parent_ids(batch: &RecordBatch, offset: u32) -> Result<RecordBatch, PayloadError> {
    let ids = parent_ids(batch);
    let shifted: UInt32Array = ids.unary(|id| id + offset);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[0] = std::sync::Arc::new(shifted);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payloads_are_valid_and_concat_to_empty() {
        for signal in Signal::ALL {
            let p = Payload::empty(signal);
            p.validate().unwrap();
            assert_eq!(p.item_count(), 0);
            let c = Payload::concat(signal, &[p.clone(), p]).unwrap();
            c.validate().unwrap();
            assert!(c.is_empty());
        }
    }
}
