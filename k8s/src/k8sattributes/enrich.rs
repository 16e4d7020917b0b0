//! Enrichment: for every row of a payload's resources table, find its pod (the Collector's
//! association rules, from the resource's attributes and the payload's origin), and add the
//! pod's, container's, namespace's and node's attributes where the resource lacks them. One
//! cache lookup per resource row, then one rebuild of the resource attribute table
//! ([`insert_strings`]); spans, points and log records are not touched, so the cost is per
//! resource, not per item.

use std::net::IpAddr;

use sluice_engine::kernels::attributes::{
    KernelError, StringsPerParent, first_rows_of_keys, insert_strings,
};
use sluice_engine::payload::{Payload, PayloadError};
use sluice_engine::schema::{AnyValueType, Table};
use sluice_engine::telemetry::Counter;

use arrow::array::{Array, AsArray};

use super::cache::{KeyBuilder, PodCache};
use super::config::{Compiled, Source};

const POD_IP: &str = "k8s.pod.ip";
const HOST_NAME: &str = "host.name";

/// The attributes every resource is looked at for, in this order: their slots in
/// [`Lookup::keys`] are their positions here.
const ALWAYS_READ: [&str; 7] = [
    POD_IP,
    "ip",
    HOST_NAME,
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.container.name",
    "container.id",
];
const POD_IP_SLOT: usize = 0;
const CLIENT_IP_SLOT: usize = 1;
const HOST_NAME_SLOT: usize = 2;
const NAMESPACE_SLOT: usize = 3;
const NODE_SLOT: usize = 4;
const CONTAINER_NAME_SLOT: usize = 5;
const CONTAINER_ID_SLOT: usize = 6;

/// The resource attributes enrichment reads, found once per payload, and the associations
/// with each source's attribute resolved to its place among them (once, at build).
#[derive(Debug, Clone)]
pub struct Lookup {
    keys: Vec<String>,
    associations: Vec<Vec<SourceSlot>>,
}

/// An association source, its attribute as a slot of [`Lookup::keys`].
#[derive(Debug, Clone, Copy)]
enum SourceSlot {
    Connection,
    Attribute { slot: usize, host_name: bool },
}

impl Lookup {
    pub fn new(config: &Compiled) -> Self {
        let mut keys: Vec<String> = ALWAYS_READ.iter().map(|s| s.to_string()).collect();
        let mut associations = Vec::new();
        for a in &config.associations {
            let mut sources = Vec::new();
            for s in &a.sources {
                sources.push(match s {
                    Source::Connection => SourceSlot::Connection,
                    Source::ResourceAttribute(n) => {
                        let slot = match keys.iter().position(|k| k == n) {
                            Some(i) => i,
                            None => {
                                keys.push(n.clone());
                                keys.len() - 1
                            }
                        };
                        SourceSlot::Attribute {
                            slot,
                            host_name: n == HOST_NAME,
                        }
                    }
                });
            }
            associations.push(sources);
        }
        Lookup { keys, associations }
    }
}

/// A payload enrichment could not rebuild (a broken table invariant: never from sluice's
/// decoders).
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// What enrichment counted.
#[derive(Clone, Default)]
pub struct EnrichMetrics {
    /// Resources with an identifier whose pod is not in the cache (the Collector's
    /// `otelcol_otelsvc_k8s_ip_lookup_miss`).
    pub lookup_miss: Counter,
}

/// Adds pod metadata to every resource of `payload` (see the module doc).
pub fn enrich(
    payload: &mut Payload,
    cache: &PodCache,
    config: &Compiled,
    lookup: &Lookup,
    metrics: &EnrichMetrics,
) -> Result<(), EnrichError> {
    let n = payload.table(Table::Resources).num_rows();
    if n == 0 {
        return Ok(());
    }
    // The peer, as the Collector's `clientutil.Address` prints it (an IPv4-mapped IPv6
    // address as IPv4).
    let origin = payload.origin.map(|a| a.ip().to_canonical().to_string());
    let attrs = payload.table(Table::ResourceAttrs);
    let rows = first_rows_of_keys(attrs, n, &lookup.keys);
    let types = attrs
        .column(2)
        .as_primitive::<arrow::datatypes::UInt8Type>();
    let strs = attrs.column(3).as_string::<i32>();
    // The non-empty string value of lookup key `slot` on resource `r`.
    let value = |slot: usize, r: usize| -> Option<&str> {
        let row = rows[slot][r];
        if row == u32::MAX {
            return None;
        }
        let row = row as usize;
        (types.value(row) == AnyValueType::Str as u8 && strs.is_valid(row))
            .then(|| strs.value(row))
            .filter(|s| !s.is_empty())
    };
    let rules = &config.rules;
    let add_pod_ip = config.passthrough || rules.pod_ip;
    let mut add = StringsPerParent::with_capacity(n, n * 12);
    let mut key = KeyBuilder::default();
    let mut misses = 0u64;
    for r in 0..n {
        key.clear();
        // The first connection-kind value of the identifier (what `k8s.pod.ip` gets).
        let mut connection: Option<&str> = None;
        if config.associations.is_empty() {
            let ip = value(POD_IP_SLOT, r)
                .or_else(|| value(CLIENT_IP_SLOT, r))
                .or(origin.as_deref())
                .or_else(|| value(HOST_NAME_SLOT, r).filter(|h| h.parse::<IpAddr>().is_ok()));
            if let Some(ip) = ip {
                key.connection(ip);
                connection = Some(ip);
            }
        } else {
            for a in &lookup.associations {
                key.clear();
                connection = None;
                let mut resolved = true;
                for s in a {
                    match *s {
                        SourceSlot::Connection => match origin.as_deref() {
                            Some(ip) => {
                                key.connection(ip);
                                connection.get_or_insert(ip);
                            }
                            None => resolved = false,
                        },
                        SourceSlot::Attribute { slot, host_name } => match value(slot, r) {
                            // host.name identifies a pod only when it holds an IP.
                            Some(v) if !host_name || v.parse::<IpAddr>().is_ok() => {
                                key.resource_attribute(&lookup.keys[slot], v)
                            }
                            _ => resolved = false,
                        },
                    }
                    if !resolved {
                        break;
                    }
                }
                if resolved {
                    break;
                }
                key.clear();
                connection = None;
            }
        }
        if add_pod_ip && let Some(ip) = connection {
            add.push(POD_IP, ip);
        }
        if config.passthrough {
            add.end_parent();
            continue;
        }
        let pod = if key.is_empty() {
            None
        } else {
            match cache.pod(key.as_str()) {
                Some(p) if p.ignore => None,
                Some(p) => Some(p),
                None => {
                    misses += 1;
                    None
                }
            }
        };
        if let Some(p) = pod {
            for (k, v) in &p.attributes {
                add.push(k, v);
            }
            let container = match (value(CONTAINER_NAME_SLOT, r), value(CONTAINER_ID_SLOT, r)) {
                (Some(name), _) => p.containers.iter().find(|c| c.name == name),
                (None, Some(id)) => p.containers.iter().find(|c| c.ids.iter().any(|i| i == id)),
                (None, None) if p.containers.len() == 1 => p.containers.first(),
                _ => None,
            };
            for (k, v) in container.iter().flat_map(|c| &c.attributes) {
                add.push(k, v);
            }
            if rules.cluster_uid
                && let Some(ks) = cache.namespace("kube-system")
                && !ks.uid.is_empty()
            {
                add.push("k8s.cluster.uid", &ks.uid);
            }
        }
        let ns = pod
            .map(|p| p.namespace.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| value(NAMESPACE_SLOT, r));
        if let Some(entry) = ns.and_then(|ns| cache.namespace(ns)) {
            for (k, v) in &entry.attributes {
                add.push(k, v);
            }
        }
        let node_name = pod
            .map(|p| p.node_name.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| value(NODE_SLOT, r));
        if let Some(entry) = node_name.and_then(|n| cache.node(n)) {
            for (k, v) in &entry.attributes {
                add.push(k, v);
            }
            if rules.node_uid && !entry.uid.is_empty() {
                add.push("k8s.node.uid", &entry.uid);
            }
        }
        add.end_parent();
    }
    metrics.lookup_miss.add(misses);
    if add.num_pairs() == 0 {
        return Ok(());
    }
    let out = insert_strings(attrs, &add, true)?;
    drop(add);
    payload.set(Table::ResourceAttrs, out)?;
    Ok(())
}
