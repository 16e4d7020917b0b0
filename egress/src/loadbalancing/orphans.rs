//! Persistent queues of backends that are gone: a backend that left the ring while sluice was
//! down (a gateway pod replaced during a node's restart) left its queue directory behind, and
//! no exporter of the new ring opens it. At start the load balancer routes what such a
//! directory holds again, through the current ring — as a backend removed while running hands
//! on what it cannot deliver — so nothing accepted is lost with the backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_engine::schema::Signal;

use super::{Reroute, Shared, lock};
use crate::file_storage::{QueueStorage, decode_record, escape_name, unescape_name};

impl Shared {
    /// Routes again, oldest first, what the persistent queues of this load balancer's backends
    /// not in the current ring hold; each record is deleted once the ring took it (and its
    /// backend stored it). What finds no taker (no backend yet, the load balancer stopping)
    /// stays on disk for the next start. Runs once, after the first backend set.
    pub(super) async fn adopt_orphans(self: Arc<Self>, storage: String) {
        let probe = match QueueStorage::for_exporter(
            &self.backend_context(self.id.clone()),
            Some(&storage),
        ) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(exporter = %self.id, error = %e, "cannot look for the persistent queues of removed backends");
                return;
            }
        };
        let directory = probe.directory().to_path_buf();
        drop(probe);
        let names = tokio::task::spawn_blocking(move || {
            std::fs::read_dir(&directory).map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect::<Vec<_>>()
            })
        })
        .await;
        let Ok(Ok(names)) = names else {
            // No directory yet: nothing was ever stored.
            return;
        };
        let current = self.snapshot().ring.endpoints().to_vec();
        if current.is_empty() {
            // Nothing could take it: left for the next start (a resolver that has not answered
            // yet is not a ring without these backends).
            tracing::warn!(exporter = %self.id, "no backends resolved at start: persistent queues of removed backends, if any, are routed again after the next start");
            return;
        }
        let orphans: BTreeSet<String> = names
            .iter()
            .filter_map(|n| self.backend_of_queue_dir(n))
            .filter(|e| !current.contains(e))
            .collect();
        for endpoint in orphans {
            // Back in the ring meanwhile: its own exporter replays it.
            if self.snapshot().ring.endpoints().contains(&endpoint) {
                continue;
            }
            if !self.adopt(&storage, &endpoint).await {
                return;
            }
        }
    }

    /// The endpoint of the backend of this load balancer whose queue directory is `name`, if
    /// it is one (`exporter_loadbalancing_<[name/]endpoint, escaped>_<signal>.sluice`).
    fn backend_of_queue_dir(&self, name: &str) -> Option<String> {
        let prefix = format!("exporter_{}_", escape_name(&self.id.type_name));
        let middle = name.strip_prefix(&prefix)?.strip_suffix(".sluice")?;
        let (escaped, signal) = middle.rsplit_once('_')?;
        Signal::ALL.iter().find(|s| s.as_str() == signal)?;
        let id_name = unescape_name(escaped)?;
        let endpoint = match &self.id.name {
            Some(n) => id_name.strip_prefix(n.as_str())?.strip_prefix('/')?,
            // Another (named) load balancer's backends have a `/` in their name.
            None if id_name.contains('/') => return None,
            None => id_name.as_str(),
        };
        (!endpoint.is_empty()).then(|| endpoint.to_string())
    }

    /// Routes again what the queue of the removed backend `endpoint` holds. `false` when the
    /// load balancer stopped routing (stop adopting).
    async fn adopt(&self, storage: &str, endpoint: &str) -> bool {
        let id = self.backend_id(endpoint);
        let label = id.to_string();
        let queue = match QueueStorage::for_exporter(&self.backend_context(id), Some(storage)) {
            Ok(Some(q)) => Arc::new(q),
            Ok(None) => return true,
            Err(e) => {
                tracing::error!(exporter = %self.id, endpoint, error = %e, "cannot open the persistent queue of a removed backend");
                return true;
            }
        };
        let opening = queue.clone();
        let logs = match tokio::task::spawn_blocking(move || opening.open_existing()).await {
            Ok(Ok(logs)) => logs,
            Ok(Err(e)) => {
                tracing::error!(exporter = %self.id, endpoint, error = %e, "cannot open the persistent queue of a removed backend; it stays on disk");
                return true;
            }
            Err(_) => return true,
        };
        let pending: u64 = logs.iter().map(|(_, _, o)| o.pending_records).sum();
        if pending > 0 {
            tracing::info!(exporter = %self.id, endpoint, batches = pending, "a backend no longer in the ring left a persistent queue: routing it again through the current ring");
        }
        let Some(to) = lock(&self.handoff).as_ref().map(|tx| tx.downgrade()) else {
            return false;
        };
        let mut carry_on = true;
        'logs: for (signal, log, opened) in logs {
            for segment in opened.segments {
                let reader = log.clone();
                let records = match tokio::task::spawn_blocking(move || {
                    reader.read_segment(segment)
                })
                .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::error!(exporter = %self.id, endpoint, error = %e, "cannot read a segment of a removed backend's queue; it stays on disk");
                        continue;
                    }
                    Err(_) => continue,
                };
                for (record_id, record) in records {
                    let payload = match decode_record(signal, &record) {
                        Ok((payload, _)) => payload,
                        Err(e) => {
                            tracing::error!(exporter = %self.id, endpoint, error = %e, "a stored record of a removed backend cannot be decoded; skipped");
                            queue.count_corrupt(1);
                            let _ = log.ack(record_id);
                            continue;
                        }
                    };
                    match Reroute::hand_on(&to, payload, true).await {
                        Ok(()) => {
                            if let Err(e) = log.ack(record_id) {
                                tracing::warn!(exporter = %self.id, endpoint, error = %e, "cannot record that a removed backend's batch was routed again; it may be sent again after a restart");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(exporter = %self.id, endpoint, error = %e, "the rest of a removed backend's persistent queue stays on disk, routed again after the next start");
                            carry_on = !self.stopping.load(std::sync::atomic::Ordering::Relaxed);
                            break 'logs;
                        }
                    }
                }
            }
        }
        // Its queue's series go with it (the lock on its directory with the last reference).
        drop(queue);
        self.telemetry.remove(&[("exporter", label.as_str())]);
        carry_on
    }
}
