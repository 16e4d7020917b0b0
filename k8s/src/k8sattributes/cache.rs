//! The pod metadata cache: what the watches learnt, keyed as the Collector's `WatchClient`
//! keys it (`internal/kube/client.go`), read once per resource row by the processor.
//!
//! A pod is stored under every identifier it can be found by:
//! - one per configured association whose sources all resolve on the pod (a `connection`
//!   source is the pod IP, never for hostNetwork pods; a `resource_attribute` source is the
//!   pod's namespace, name, uid, IP (`k8s.pod.ip`, `host.name`) or an extracted attribute);
//! - always `k8s.pod.uid`;
//! - for a pod with an IP that is not hostNetwork, its IP as a `connection` identifier (which is
//!   also what `k8s.pod.ip`, `ip` and an IP-valued `host.name` resource attribute look up when
//!   no association is configured) and as `resource_attribute k8s.pod.ip`.
//!
//! An identifier already held by another pod is taken over only if the new pod did not start
//! earlier (IP reuse: a late update of the old pod must not steal its IP back). A deleted pod
//! stays [`DELETE_GRACE`] (the Collector's `podDeleteGracePeriod`) for data still in flight.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use super::config::{Association, Compiled, From, Rules, Source, set};

/// How long a deleted pod is kept (the Collector's `podDeleteGracePeriod`).
pub const DELETE_GRACE: Duration = Duration::from_secs(120);

/// The annotation that makes the processor skip a pod.
pub const IGNORE_ANNOTATION: &str = "opentelemetry.io/k8s-processor/ignore";

/// What the cache keeps of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEntry {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node_name: String,
    pub address: String,
    pub host_network: bool,
    /// `status.startTime` (seconds), to resolve IP reuse.
    pub start_time: Option<i64>,
    /// Excluded by `exclude.pods` or annotated to be ignored: found, but adds nothing.
    pub ignore: bool,
    /// The pod's attributes (extracted metadata, labels, annotations), in extraction order.
    pub attributes: Vec<(String, String)>,
    pub containers: Vec<ContainerEntry>,
}

/// One container (or init container) of a pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerEntry {
    pub name: String,
    /// What this container adds (`k8s.container.name`, `container.image.name`,
    /// `container.image.tag`, `container.id`), as configured.
    pub attributes: Vec<(String, String)>,
    /// Its container ids without the runtime prefix (current and previous runs), for
    /// association by `container.id`.
    pub ids: Vec<String>,
}

/// A namespace's or node's uid and extracted attributes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnerEntry {
    pub uid: String,
    pub attributes: Vec<(String, String)>,
}

/// What a ReplicaSet says about its Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaSetEntry {
    pub deployment_name: String,
    pub deployment_uid: String,
}

/// The cache.
#[derive(Debug, Default)]
pub struct PodCache {
    pods: HashMap<String, Arc<PodEntry>>,
    namespaces: HashMap<String, Arc<OwnerEntry>>,
    nodes: HashMap<String, Arc<OwnerEntry>>,
    replicasets: HashMap<String, ReplicaSetEntry>,
    /// (when deleted, identifier, uid) in deletion order.
    delete_queue: VecDeque<(Instant, String, String)>,
}

/// Builds identifier strings: the key of a pod under one identifier. Parts are the source
/// (`c` connection, `r` resource attribute with its name) and the value, separated by bytes
/// that cannot occur in attribute names or Kubernetes values.
#[derive(Default)]
pub struct KeyBuilder {
    buf: String,
}

impl KeyBuilder {
    pub fn clear(&mut self) {
        self.buf.clear();
    }
    pub fn connection(&mut self, ip: &str) {
        self.sep();
        self.buf.push('c');
        self.buf.push('\u{1f}');
        self.buf.push_str(ip);
    }
    pub fn resource_attribute(&mut self, name: &str, value: &str) {
        self.sep();
        self.buf.push('r');
        self.buf.push('\u{1f}');
        self.buf.push_str(name);
        self.buf.push('\u{1f}');
        self.buf.push_str(value);
    }
    fn sep(&mut self) {
        if !self.buf.is_empty() {
            self.buf.push('\u{1e}');
        }
    }
    pub fn as_str(&self) -> &str {
        &self.buf
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl PodCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pod under identifier `key` (built with a [`KeyBuilder`]).
    pub fn pod(&self, key: &str) -> Option<&Arc<PodEntry>> {
        self.pods.get(key)
    }

    pub fn namespace(&self, name: &str) -> Option<&Arc<OwnerEntry>> {
        self.namespaces.get(name)
    }

    pub fn node(&self, name: &str) -> Option<&Arc<OwnerEntry>> {
        self.nodes.get(name)
    }

    /// Identifiers held (the Collector's `pod_table_size`).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Distinct pods held.
    pub fn distinct_pods(&self) -> usize {
        let mut uids: Vec<&str> = self.pods.values().map(|p| p.uid.as_str()).collect();
        uids.sort_unstable();
        uids.dedup();
        uids.len()
    }

    /// Every identifier of `pod` under `associations` (see the module doc).
    pub fn identifiers(pod: &PodEntry, associations: &[Association]) -> Vec<String> {
        let mut out = Vec::new();
        let mut key = KeyBuilder::default();
        'assoc: for a in associations {
            key.clear();
            // A `container.id` source makes one identifier per container id.
            let mut container_slot = None;
            let mut parts: Vec<(&Source, String)> = Vec::new();
            for s in &a.sources {
                match s {
                    Source::Connection => {
                        if pod.address.is_empty() || pod.host_network {
                            continue 'assoc;
                        }
                        parts.push((s, pod.address.clone()));
                    }
                    Source::ResourceAttribute(name) => {
                        let v = match name.as_str() {
                            "k8s.namespace.name" => pod.namespace.clone(),
                            "k8s.pod.name" => pod.name.clone(),
                            "k8s.pod.uid" => pod.uid.clone(),
                            "host.name" | "k8s.pod.ip" => pod.address.clone(),
                            "container.id" => {
                                container_slot = Some(parts.len());
                                String::new()
                            }
                            other => pod
                                .attributes
                                .iter()
                                .find(|(k, _)| k == other)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default(),
                        };
                        if v.is_empty() && container_slot != Some(parts.len()) {
                            continue 'assoc;
                        }
                        parts.push((s, v));
                    }
                }
            }
            let build = |parts: &[(&Source, String)], key: &mut KeyBuilder| {
                key.clear();
                for (s, v) in parts {
                    match s {
                        Source::Connection => key.connection(v),
                        Source::ResourceAttribute(n) => key.resource_attribute(n, v),
                    }
                }
                key.as_str().to_string()
            };
            match container_slot {
                Some(slot) => {
                    for c in &pod.containers {
                        for id in &c.ids {
                            parts[slot].1 = id.clone();
                            out.push(build(&parts, &mut key));
                        }
                    }
                }
                None => out.push(build(&parts, &mut key)),
            }
        }
        // Always: the uid; the IP (not for hostNetwork pods) as a connection and as k8s.pod.ip.
        if !pod.uid.is_empty() {
            key.clear();
            key.resource_attribute("k8s.pod.uid", &pod.uid);
            out.push(key.as_str().to_string());
        }
        if !pod.address.is_empty() && !pod.host_network {
            key.clear();
            key.connection(&pod.address);
            out.push(key.as_str().to_string());
            key.clear();
            key.resource_attribute("k8s.pod.ip", &pod.address);
            out.push(key.as_str().to_string());
        }
        out
    }

    /// Adds or updates a pod under all its identifiers; returns whether its uid was new to
    /// the cache.
    pub fn add_or_update(&mut self, pod: PodEntry, associations: &[Association]) -> bool {
        let pod = Arc::new(pod);
        let ids = Self::identifiers(&pod, associations);
        // Judged before inserting: an association may repeat one of the always-kept
        // identifiers (a `connection` source is the IP identifier too).
        let new = !ids
            .iter()
            .any(|id| self.pods.get(id).is_some_and(|p| p.uid == pod.uid));
        for id in ids {
            if let Some(held) = self.pods.get(&id)
                && held.uid != pod.uid
                && let (Some(ours), Some(theirs)) = (pod.start_time, held.start_time)
                && ours < theirs
            {
                // The identifier belongs to a pod that started later (IP reuse).
                continue;
            }
            self.pods.insert(id, pod.clone());
        }
        new
    }

    /// Marks a deleted pod's identifiers for removal after the grace period (each only if it
    /// still names this pod then).
    pub fn forget(&mut self, pod: &PodEntry, associations: &[Association], now: Instant) {
        for id in Self::identifiers(pod, associations) {
            if self.pods.get(&id).is_some_and(|p| p.uid == pod.uid) {
                self.delete_queue.push_back((now, id, pod.uid.clone()));
            }
        }
    }

    /// Removes the identifiers whose grace period has passed at `now`, unless a newer pod took
    /// them over meanwhile. Returns how many were removed.
    pub fn purge(&mut self, now: Instant, grace: Duration) -> usize {
        let mut removed = 0;
        while let Some((at, _, _)) = self.delete_queue.front() {
            if now.saturating_duration_since(*at) < grace {
                break;
            }
            let Some((_, id, uid)) = self.delete_queue.pop_front() else {
                break;
            };
            if self.pods.get(&id).is_some_and(|p| p.uid == uid) {
                self.pods.remove(&id);
                removed += 1;
            }
        }
        removed
    }

    /// After a re-list: pods no longer listed are forgotten (as deleted now).
    pub fn forget_unlisted(
        &mut self,
        listed: &hashbrown::HashSet<String>,
        associations: &[Association],
        now: Instant,
    ) -> usize {
        let mut gone: Vec<Arc<PodEntry>> = self
            .pods
            .values()
            .filter(|p| !listed.contains(&p.uid))
            .cloned()
            .collect();
        gone.sort_by(|a, b| a.uid.cmp(&b.uid));
        gone.dedup_by(|a, b| a.uid == b.uid);
        let gone: Vec<Arc<PodEntry>> = {
            let already: hashbrown::HashSet<&str> = self
                .delete_queue
                .iter()
                .map(|(_, _, u)| u.as_str())
                .collect();
            gone.into_iter()
                .filter(|p| !already.contains(p.uid.as_str()))
                .collect()
        };
        for p in &gone {
            self.forget(p, associations, now);
        }
        gone.len()
    }

    pub fn set_namespace(&mut self, name: String, entry: OwnerEntry) {
        self.namespaces.insert(name, Arc::new(entry));
    }
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }
    pub fn set_node(&mut self, name: String, entry: OwnerEntry) {
        self.nodes.insert(name, Arc::new(entry));
    }
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }
    pub fn set_replicaset(&mut self, uid: String, entry: ReplicaSetEntry) {
        self.replicasets.insert(uid, entry);
    }
    pub fn remove_replicaset(&mut self, uid: &str) {
        self.replicasets.remove(uid);
    }
    pub fn replicaset(&self, uid: &str) -> Option<&ReplicaSetEntry> {
        self.replicasets.get(uid)
    }
}

fn map_of(m: &Option<BTreeMap<String, String>>) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    m.as_ref().unwrap_or(&EMPTY)
}

/// Strips the runtime prefix of a container id (`containerd://abc` -> `abc`).
fn strip_runtime(id: &str) -> &str {
    match id.split_once("://") {
        Some((_, rest)) => rest,
        None => id,
    }
}

/// An image reference's repository and tag, as the Collector's `ParseImageName` splits it
/// (`docker.io/library/nginx:1.25` -> `docker.io/library/nginx`, `1.25`; no tag: `latest`;
/// a digest alone: no tag).
fn image_name_and_tag(image: &str) -> (String, String) {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // A tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            name[..last_slash + i].to_string(),
            name[last_slash + i + 1..].to_string(),
        ),
        None if digest.is_some() => (name.to_string(), String::new()),
        None => (name.to_string(), "latest".to_string()),
    }
}

/// A `k8s.cronjob.name` from a Job name: without its trailing `-<digits>` (the CronJob
/// controller's schedule suffix).
fn cronjob_of_job(job: &str) -> Option<&str> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(prefix)
}

/// A Deployment name from a ReplicaSet name and the pod's `pod-template-hash` label.
fn deployment_from_replicaset(replicaset: &str, hash: Option<&str>) -> Option<String> {
    let hash = hash.filter(|h| !h.is_empty())?;
    replicaset
        .strip_suffix(hash)
        .and_then(|r| r.strip_suffix('-'))
        .map(str::to_string)
}

impl PodEntry {
    /// What the cache keeps of `pod`, attributes extracted by `config`'s rules (the
    /// Collector's `podFromAPI` + `extractPodAttributes` + `extractPodContainersAttributes`).
    /// Deployment names come from the ReplicaSets in `cache` when known.
    pub fn from_api(pod: &Pod, config: &Compiled, cache: &PodCache) -> PodEntry {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let uid = meta.uid.clone().unwrap_or_default();
        let node_name = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
        let address = status.and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        let annotations = map_of(&meta.annotations);
        let labels = map_of(&meta.labels);
        let ignore = annotations
            .get(IGNORE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || config.exclude.iter().any(|re| re.is_match(&name));
        let mut entry = PodEntry {
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            start_time: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_second()),
            ignore,
            attributes: Vec::new(),
            containers: Vec::new(),
            uid,
            name,
            namespace,
            node_name,
            address,
        };
        if ignore {
            return entry;
        }
        let r = &config.rules;
        let a = &mut entry.attributes;
        let mut put = |k: &str, v: &str| set(a, k.to_string(), v.to_string());
        if r.pod_name {
            put("k8s.pod.name", &entry.name);
        }
        if r.pod_hostname {
            put(
                "k8s.pod.hostname",
                spec.and_then(|s| s.hostname.as_deref()).unwrap_or(""),
            );
        }
        if r.pod_ip {
            put("k8s.pod.ip", &entry.address);
        }
        if r.namespace {
            put("k8s.namespace.name", &entry.namespace);
        }
        if r.start_time
            && let Some(t) = &meta.creation_timestamp
        {
            put("k8s.pod.start_time", &t.0.to_string());
        }
        if r.pod_uid {
            put("k8s.pod.uid", &entry.uid);
        }
        for owner in meta.owner_references.iter().flatten() {
            match owner.kind.as_str() {
                "ReplicaSet" => {
                    if r.replicaset_uid {
                        put("k8s.replicaset.uid", &owner.uid);
                    }
                    if r.replicaset_name {
                        put("k8s.replicaset.name", &owner.name);
                    }
                    if r.deployment_name || r.deployment_uid {
                        let known = cache.replicaset(&owner.uid);
                        let name = match known {
                            Some(rs) if !r.deployment_name_from_replicaset => {
                                Some(rs.deployment_name.clone())
                            }
                            _ => deployment_from_replicaset(
                                &owner.name,
                                labels.get("pod-template-hash").map(String::as_str),
                            ),
                        };
                        if r.deployment_name
                            && let Some(n) = name.filter(|n| !n.is_empty())
                        {
                            put("k8s.deployment.name", &n);
                        }
                        if r.deployment_uid
                            && let Some(rs) = known
                            && !rs.deployment_uid.is_empty()
                        {
                            put("k8s.deployment.uid", &rs.deployment_uid);
                        }
                    }
                }
                "DaemonSet" => {
                    if r.daemonset_uid {
                        put("k8s.daemonset.uid", &owner.uid);
                    }
                    if r.daemonset_name {
                        put("k8s.daemonset.name", &owner.name);
                    }
                }
                "StatefulSet" => {
                    if r.statefulset_uid {
                        put("k8s.statefulset.uid", &owner.uid);
                    }
                    if r.statefulset_name {
                        put("k8s.statefulset.name", &owner.name);
                    }
                }
                "Job" => {
                    if r.job_uid {
                        put("k8s.job.uid", &owner.uid);
                    }
                    if r.job_name {
                        put("k8s.job.name", &owner.name);
                    }
                    if r.cronjob_name
                        && let Some(c) = cronjob_of_job(&owner.name)
                    {
                        put("k8s.cronjob.name", c);
                    }
                }
                _ => {}
            }
        }
        if r.node_name {
            put("k8s.node.name", &entry.node_name);
        }
        for rule in r.labels.iter().filter(|r| r.from == From::Pod) {
            rule.extract(labels, "labels", a);
        }
        for rule in r.annotations.iter().filter(|r| r.from == From::Pod) {
            rule.extract(annotations, "annotations", a);
        }
        if r.containers() {
            entry.containers = containers_of(pod, r);
        }
        entry
    }
}

fn containers_of(pod: &Pod, r: &Rules) -> Vec<ContainerEntry> {
    let mut out: Vec<ContainerEntry> = Vec::new();
    let spec = pod.spec.as_ref();
    let specs = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .into_iter()
        .flatten();
    for c in specs {
        let mut e = ContainerEntry {
            name: c.name.clone(),
            ..Default::default()
        };
        if let Some(image) = c.image.as_deref().filter(|i| !i.is_empty()) {
            let (name, tag) = image_name_and_tag(image);
            if r.container_image_name && !name.is_empty() {
                e.attributes.push(("container.image.name".into(), name));
            }
            if r.container_image_tag && !tag.is_empty() {
                e.attributes.push(("container.image.tag".into(), tag));
            }
        }
        out.push(e);
    }
    let status = pod.status.as_ref();
    let statuses = status
        .map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .into_iter()
        .flatten();
    for s in statuses {
        let i = match out.iter().position(|c| c.name == s.name) {
            Some(i) => i,
            None => {
                out.push(ContainerEntry {
                    name: s.name.clone(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let c = &mut out[i];
        if r.container_name {
            set(
                &mut c.attributes,
                "k8s.container.name".into(),
                s.name.clone(),
            );
        }
        // The current run's id; the previous run's (after a restart) also identifies it.
        let current = s.container_id.as_deref().map(strip_runtime).unwrap_or("");
        if !current.is_empty() {
            c.ids.push(current.to_string());
            if r.container_id {
                set(
                    &mut c.attributes,
                    "container.id".into(),
                    current.to_string(),
                );
            }
        }
        if let Some(prev) = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .and_then(|t| t.container_id.as_deref())
            .map(strip_runtime)
            .filter(|p| !p.is_empty())
        {
            c.ids.push(prev.to_string());
        }
    }
    out
}

impl OwnerEntry {
    /// A namespace's uid and the attributes `config` extracts from it.
    pub fn from_namespace(ns: &Namespace, config: &Compiled) -> OwnerEntry {
        owner_entry(&ns.metadata, config, From::Namespace)
    }

    /// A node's uid and the attributes `config` extracts from it.
    pub fn from_node(node: &Node, config: &Compiled) -> OwnerEntry {
        owner_entry(&node.metadata, config, From::Node)
    }
}

fn owner_entry(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    config: &Compiled,
    from: From,
) -> OwnerEntry {
    let mut attributes = Vec::new();
    for rule in config.rules.labels.iter().filter(|r| r.from == from) {
        rule.extract(map_of(&meta.labels), "labels", &mut attributes);
    }
    for rule in config.rules.annotations.iter().filter(|r| r.from == from) {
        rule.extract(map_of(&meta.annotations), "annotations", &mut attributes);
    }
    OwnerEntry {
        uid: meta.uid.clone().unwrap_or_default(),
        attributes,
    }
}

impl ReplicaSetEntry {
    /// The Deployment that controls `rs`, if any.
    pub fn from_api(rs: &ReplicaSet) -> ReplicaSetEntry {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Deployment" && o.controller == Some(true))
            .map(|o| ReplicaSetEntry {
                deployment_name: o.name.clone(),
                deployment_uid: o.uid.clone(),
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ip: &str, start: i64) -> PodEntry {
        PodEntry {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            node_name: "n1".into(),
            address: ip.into(),
            host_network: false,
            start_time: Some(start),
            ignore: false,
            attributes: vec![("k8s.pod.name".into(), format!("pod-{uid}"))],
            containers: Vec::new(),
        }
    }

    fn by_ip(cache: &PodCache, ip: &str) -> Option<String> {
        let mut k = KeyBuilder::default();
        k.connection(ip);
        cache.pod(k.as_str()).map(|p| p.uid.clone())
    }

    #[test]
    fn pods_are_keyed_by_uid_and_ip_but_host_network_pods_not_by_ip() {
        let mut c = PodCache::new();
        assert!(c.add_or_update(pod("a", "10.0.0.1", 1), &[]));
        let mut host = pod("h", "192.168.0.5", 1);
        host.host_network = true;
        c.add_or_update(host, &[]);
        assert_eq!(by_ip(&c, "10.0.0.1").as_deref(), Some("a"));
        assert_eq!(by_ip(&c, "192.168.0.5"), None);
        let mut k = KeyBuilder::default();
        k.resource_attribute("k8s.pod.uid", "h");
        assert_eq!(c.pod(k.as_str()).map(|p| p.name.as_str()), Some("pod-h"));
        k.clear();
        k.resource_attribute("k8s.pod.ip", "10.0.0.1");
        assert!(c.pod(k.as_str()).is_some());
        // uid, connection, k8s.pod.ip for `a`; uid only for `h`.
        assert_eq!(c.len(), 4);
        assert_eq!(c.distinct_pods(), 2);
        assert!(!c.add_or_update(pod("a", "10.0.0.1", 1), &[]), "an update");
        // An association that repeats the IP identifier: still one new pod, then an update.
        let by_connection = [Association {
            sources: vec![Source::Connection],
        }];
        assert!(c.add_or_update(pod("b", "10.0.0.2", 1), &by_connection));
        assert!(!c.add_or_update(pod("b", "10.0.0.2", 1), &by_connection));
    }

    #[test]
    fn a_reused_ip_goes_to_the_pod_that_started_later() {
        let mut c = PodCache::new();
        c.add_or_update(pod("old", "10.0.0.9", 100), &[]);
        c.add_or_update(pod("new", "10.0.0.9", 200), &[]);
        assert_eq!(by_ip(&c, "10.0.0.9").as_deref(), Some("new"));
        // A late update of the old pod does not take the IP back.
        c.add_or_update(pod("old", "10.0.0.9", 100), &[]);
        assert_eq!(by_ip(&c, "10.0.0.9").as_deref(), Some("new"));
        // Deleting the old pod leaves the new one's IP alone, even after the grace period.
        let t0 = Instant::now();
        c.forget(&pod("old", "10.0.0.9", 100), &[], t0);
        assert_eq!(
            c.purge(t0 + DELETE_GRACE, DELETE_GRACE),
            1,
            "only old's uid key"
        );
        assert_eq!(by_ip(&c, "10.0.0.9").as_deref(), Some("new"));
    }

    #[test]
    fn deleted_pods_stay_for_the_grace_period() {
        let mut c = PodCache::new();
        c.add_or_update(pod("a", "10.0.0.1", 1), &[]);
        let t0 = Instant::now();
        c.forget(&pod("a", "10.0.0.1", 1), &[], t0);
        assert_eq!(c.purge(t0 + Duration::from_secs(119), DELETE_GRACE), 0);
        assert_eq!(by_ip(&c, "10.0.0.1").as_deref(), Some("a"));
        assert_eq!(c.purge(t0 + DELETE_GRACE, DELETE_GRACE), 3);
        assert!(c.is_empty());
    }

    #[test]
    fn associations_add_identifiers_when_all_sources_resolve() {
        let assoc = vec![
            Association {
                sources: vec![
                    Source::ResourceAttribute("k8s.namespace.name".into()),
                    Source::ResourceAttribute("k8s.pod.name".into()),
                ],
            },
            Association {
                sources: vec![Source::ResourceAttribute("missing.attr".into())],
            },
        ];
        let ids = PodCache::identifiers(&pod("a", "", 1), &assoc);
        let mut k = KeyBuilder::default();
        k.resource_attribute("k8s.namespace.name", "default");
        k.resource_attribute("k8s.pod.name", "pod-a");
        assert_eq!(ids[0], k.as_str());
        assert_eq!(
            ids.len(),
            2,
            "namespace+name, uid; no IP, no unresolved association"
        );
    }

    #[test]
    fn image_names_split_like_the_collector() {
        for (image, name, tag) in [
            ("nginx", "nginx", "latest"),
            ("nginx:1.25", "nginx", "1.25"),
            ("registry:5000/team/app:v2", "registry:5000/team/app", "v2"),
            ("registry:5000/team/app", "registry:5000/team/app", "latest"),
            ("app@sha256:abc", "app", ""),
            ("app:v1@sha256:abc", "app", "v1"),
        ] {
            assert_eq!(
                image_name_and_tag(image),
                (name.to_string(), tag.to_string()),
                "{image}"
            );
        }
        assert_eq!(cronjob_of_job("backup-28391040"), Some("backup"));
        assert_eq!(cronjob_of_job("backup"), None);
        assert_eq!(
            deployment_from_replicaset("web-7d8f9c6b5d", Some("7d8f9c6b5d")).as_deref(),
            Some("web")
        );
    }
}
