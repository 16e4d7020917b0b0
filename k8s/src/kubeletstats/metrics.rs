//! The metrics: the Collector's definitions (`receiver/kubeletstatsreceiver/metadata.yaml`:
//! names, descriptions, units, types, default-enabled set) and the conversion of one stats
//! summary into them (`internal/kubelet/accumulator.go` and its helpers), appended straight
//! into the engine's metric tables.
//!
//! What the Collector does, and so this does:
//! - one resource per node, pod, container and volume, in that walk order (the node, then each
//!   pod followed by its containers and volumes); a resource without any point is not emitted;
//! - every point's time is the scrape's; every point of a node, pod or container has that
//!   entity's `startTime` as start time (gauges too: mdatagen's `WithStartTimeOverride`);
//!   volume points have the receiver's start time (the metrics builder's creation time);
//! - a field missing from the summary (or `null`) gives no point, never a zero;
//! - network: only the default interface (`name`, `rxBytes`, ... inlined in `network`), or
//!   every entry of `interfaces` with `collect_all_network_interfaces`; `interface` and
//!   `direction` (`receive` / `transmit`) as point attributes;
//! - `*.cpu.usage` = `usageNanoCores / 1e9`, `*.cpu.time` = `usageCoreNanoSeconds / 1e9`,
//!   integers as `int64(uint64)` (wrapping above 2^63, as Go's conversion);
//! - `*.uptime` = whole seconds since `startTime`, when `startTime` is known.
//!
//! Differs: a missing `startTime` gives start time 0 ("unknown"); the Collector converts Go's
//! zero time, which yields an arbitrary large value.

use sluice_engine::otlp::build::{
    AttrValue, MetricSpec, MetricsBuilder, NumberKind, NumberValue, Temporality,
};

use super::summary::{CpuStats, FsStats, InterfaceStats, MemoryStats, NetworkStats, Summary};

/// The scope every metric is emitted under: the Collector's, so `otel_scope_name` matches.
pub const SCOPE_NAME: &str =
    "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kubeletstatsreceiver";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum MetricId {
    ContainerCpuTime,
    ContainerCpuUsage,
    ContainerFilesystemAvailable,
    ContainerFilesystemCapacity,
    ContainerFilesystemUsage,
    ContainerMemoryAvailable,
    ContainerMemoryMajorPageFaults,
    ContainerMemoryPageFaults,
    ContainerMemoryRss,
    ContainerMemoryUsage,
    ContainerMemoryWorkingSet,
    ContainerUptime,
    NodeCpuTime,
    NodeCpuUsage,
    NodeFilesystemAvailable,
    NodeFilesystemCapacity,
    NodeFilesystemUsage,
    NodeMemoryAvailable,
    NodeMemoryMajorPageFaults,
    NodeMemoryPageFaults,
    NodeMemoryRss,
    NodeMemoryUsage,
    NodeMemoryWorkingSet,
    NodeNetworkErrors,
    NodeNetworkIo,
    NodeUptime,
    PodCpuTime,
    PodCpuUsage,
    PodFilesystemAvailable,
    PodFilesystemCapacity,
    PodFilesystemUsage,
    PodMemoryAvailable,
    PodMemoryMajorPageFaults,
    PodMemoryPageFaults,
    PodMemoryRss,
    PodMemoryUsage,
    PodMemoryWorkingSet,
    PodNetworkErrors,
    PodNetworkIo,
    PodUptime,
    VolumeAvailable,
    VolumeCapacity,
    VolumeInodes,
    VolumeInodesFree,
    VolumeInodesUsed,
}

pub const COUNT: usize = MetricId::VolumeInodesUsed as usize + 1;

/// One metric as `metadata.yaml` defines it.
#[derive(Copy, Clone, Debug)]
pub struct MetricDef {
    pub id: MetricId,
    pub name: &'static str,
    pub description: &'static str,
    pub unit: &'static str,
    pub kind: NumberKind,
    /// `value_type: int` (else double).
    pub int: bool,
    pub enabled_by_default: bool,
}

impl MetricDef {
    pub fn spec(&self) -> MetricSpec<'static> {
        MetricSpec {
            name: self.name,
            description: self.description,
            unit: self.unit,
            kind: self.kind,
        }
    }
}

const GAUGE: NumberKind = NumberKind::Gauge;
const COUNTER: NumberKind = NumberKind::Sum {
    temporality: Temporality::Cumulative,
    monotonic: true,
};

const CPU_TIME: &str = "Total cumulative CPU time (sum of all cores) spent by the container/pod/node since its creation";
const CPU_USAGE: &str =
    "Total CPU usage (sum of all cores per second) averaged over the sample window";

const fn def(
    id: MetricId,
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    kind: NumberKind,
    int: bool,
    enabled_by_default: bool,
) -> MetricDef {
    MetricDef {
        id,
        name,
        description,
        unit,
        kind,
        int,
        enabled_by_default,
    }
}

use MetricId as M;

/// Every supported metric, indexed by [`MetricId`].
pub const DEFS: [MetricDef; COUNT] = [
    def(
        M::ContainerCpuTime,
        "container.cpu.time",
        CPU_TIME,
        "s",
        COUNTER,
        false,
        true,
    ),
    def(
        M::ContainerCpuUsage,
        "container.cpu.usage",
        CPU_USAGE,
        "{cpu}",
        GAUGE,
        false,
        true,
    ),
    def(
        M::ContainerFilesystemAvailable,
        "container.filesystem.available",
        "Container filesystem available",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerFilesystemCapacity,
        "container.filesystem.capacity",
        "Container filesystem capacity",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerFilesystemUsage,
        "container.filesystem.usage",
        "Container filesystem usage",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerMemoryAvailable,
        "container.memory.available",
        "Container memory available",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerMemoryMajorPageFaults,
        "container.memory.major_page_faults",
        "Container memory major_page_faults",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerMemoryPageFaults,
        "container.memory.page_faults",
        "Container memory page_faults",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerMemoryRss,
        "container.memory.rss",
        "Container memory rss",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerMemoryUsage,
        "container.memory.usage",
        "Container memory usage",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerMemoryWorkingSet,
        "container.memory.working_set",
        "Container memory working_set",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::ContainerUptime,
        "container.uptime",
        "The time since the container started",
        "s",
        COUNTER,
        true,
        false,
    ),
    def(
        M::NodeCpuTime,
        "k8s.node.cpu.time",
        CPU_TIME,
        "s",
        COUNTER,
        false,
        true,
    ),
    def(
        M::NodeCpuUsage,
        "k8s.node.cpu.usage",
        CPU_USAGE,
        "{cpu}",
        GAUGE,
        false,
        true,
    ),
    def(
        M::NodeFilesystemAvailable,
        "k8s.node.filesystem.available",
        "Node filesystem available",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeFilesystemCapacity,
        "k8s.node.filesystem.capacity",
        "Node filesystem capacity",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeFilesystemUsage,
        "k8s.node.filesystem.usage",
        "Node filesystem usage",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeMemoryAvailable,
        "k8s.node.memory.available",
        "Node memory available",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeMemoryMajorPageFaults,
        "k8s.node.memory.major_page_faults",
        "Node memory major_page_faults",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeMemoryPageFaults,
        "k8s.node.memory.page_faults",
        "Node memory page_faults",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeMemoryRss,
        "k8s.node.memory.rss",
        "Node memory rss",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeMemoryUsage,
        "k8s.node.memory.usage",
        "Node memory usage",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeMemoryWorkingSet,
        "k8s.node.memory.working_set",
        "Node memory working_set",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::NodeNetworkErrors,
        "k8s.node.network.errors",
        "Node network errors",
        "1",
        COUNTER,
        true,
        true,
    ),
    def(
        M::NodeNetworkIo,
        "k8s.node.network.io",
        "Node network IO",
        "By",
        COUNTER,
        true,
        true,
    ),
    def(
        M::NodeUptime,
        "k8s.node.uptime",
        "The time since the node started",
        "s",
        COUNTER,
        true,
        false,
    ),
    def(
        M::PodCpuTime,
        "k8s.pod.cpu.time",
        CPU_TIME,
        "s",
        COUNTER,
        false,
        true,
    ),
    def(
        M::PodCpuUsage,
        "k8s.pod.cpu.usage",
        CPU_USAGE,
        "{cpu}",
        GAUGE,
        false,
        true,
    ),
    def(
        M::PodFilesystemAvailable,
        "k8s.pod.filesystem.available",
        "Pod filesystem available",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodFilesystemCapacity,
        "k8s.pod.filesystem.capacity",
        "Pod filesystem capacity",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodFilesystemUsage,
        "k8s.pod.filesystem.usage",
        "Pod filesystem usage",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodMemoryAvailable,
        "k8s.pod.memory.available",
        "Pod memory available",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodMemoryMajorPageFaults,
        "k8s.pod.memory.major_page_faults",
        "Pod memory major_page_faults",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodMemoryPageFaults,
        "k8s.pod.memory.page_faults",
        "Pod memory page_faults",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodMemoryRss,
        "k8s.pod.memory.rss",
        "Pod memory rss",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodMemoryUsage,
        "k8s.pod.memory.usage",
        "Pod memory usage",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodMemoryWorkingSet,
        "k8s.pod.memory.working_set",
        "Pod memory working_set",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::PodNetworkErrors,
        "k8s.pod.network.errors",
        "Pod network errors",
        "1",
        COUNTER,
        true,
        true,
    ),
    def(
        M::PodNetworkIo,
        "k8s.pod.network.io",
        "Pod network IO",
        "By",
        COUNTER,
        true,
        true,
    ),
    def(
        M::PodUptime,
        "k8s.pod.uptime",
        "The time since the pod started",
        "s",
        COUNTER,
        true,
        false,
    ),
    def(
        M::VolumeAvailable,
        "k8s.volume.available",
        "The number of available bytes in the volume.",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::VolumeCapacity,
        "k8s.volume.capacity",
        "The total capacity in bytes of the volume.",
        "By",
        GAUGE,
        true,
        true,
    ),
    def(
        M::VolumeInodes,
        "k8s.volume.inodes",
        "The total inodes in the filesystem.",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::VolumeInodesFree,
        "k8s.volume.inodes.free",
        "The free inodes in the filesystem.",
        "1",
        GAUGE,
        true,
        true,
    ),
    def(
        M::VolumeInodesUsed,
        "k8s.volume.inodes.used",
        "The inodes used by the filesystem. This may not equal inodes - free because filesystem may share inodes with other filesystems.",
        "1",
        GAUGE,
        true,
        true,
    ),
];

/// Metrics the Collector defines (all off by default) that sluice refuses to enable, and why.
const REFUSED: &[(&str, &str)] = &[
    ("k8s.container.cpu_limit_utilization", LIMITS),
    ("k8s.container.cpu_request_utilization", LIMITS),
    ("k8s.container.memory_limit_utilization", LIMITS),
    ("k8s.container.memory_request_utilization", LIMITS),
    ("k8s.pod.cpu_limit_utilization", LIMITS),
    ("k8s.pod.cpu_request_utilization", LIMITS),
    ("k8s.pod.memory_limit_utilization", LIMITS),
    ("k8s.pod.memory_request_utilization", LIMITS),
    ("k8s.container.cpu.node.utilization", NODE),
    ("k8s.container.memory.node.utilization", NODE),
    ("k8s.pod.cpu.node.utilization", NODE),
    ("k8s.pod.memory.node.utilization", NODE),
    ("k8s.pod.volume.usage", "not implemented yet"),
    ("container.cpu.utilization", RENAMED),
    ("k8s.pod.cpu.utilization", RENAMED),
    ("k8s.node.cpu.utilization", RENAMED),
];
const LIMITS: &str = "it needs the pods' resource limits and requests from the kubelet's /pods \
                      endpoint, which sluice does not read yet";
const NODE: &str = "it needs the node's capacity from the Kubernetes API (`node` and \
                    k8s_api_config), which sluice does not read yet";
const RENAMED: &str = "the Collector replaced it with *.cpu.usage (unit {cpu}, on by default)";

/// What a `metrics.<name>` key refers to.
pub enum Support {
    Supported(MetricId),
    Refused(&'static str),
}

pub fn lookup(name: &str) -> Option<Support> {
    if let Some(d) = DEFS.iter().find(|d| d.name == name) {
        return Some(Support::Supported(d.id));
    }
    REFUSED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| Support::Refused(why))
}

/// What one scrape's conversion needs besides the summary.
pub struct Options<'c> {
    pub enabled: &'c [bool; COUNT],
    pub node: bool,
    pub pod: bool,
    pub container: bool,
    pub volume: bool,
    pub node_all_interfaces: bool,
    pub pod_all_interfaces: bool,
    /// `resource_attributes.<name>.enabled`, for the attributes this receiver emits.
    pub attr_node_name: bool,
    pub attr_pod_uid: bool,
    pub attr_pod_name: bool,
    pub attr_namespace: bool,
    pub attr_container_name: bool,
    pub attr_volume_name: bool,
    /// The scrape's time: every point's time.
    pub now_unix_nanos: u64,
    /// When the receiver started: the start time of volume points.
    pub receiver_start_unix_nanos: u64,
}

/// The metric ids of one entity kind, so node, pod and container share the code.
struct Ids {
    cpu_time: MetricId,
    cpu_usage: MetricId,
    fs: [MetricId; 3],
    memory: [MetricId; 6],
    network: Option<[MetricId; 2]>,
    uptime: MetricId,
}

const NODE_IDS: Ids = Ids {
    cpu_time: M::NodeCpuTime,
    cpu_usage: M::NodeCpuUsage,
    fs: [
        M::NodeFilesystemAvailable,
        M::NodeFilesystemCapacity,
        M::NodeFilesystemUsage,
    ],
    memory: [
        M::NodeMemoryAvailable,
        M::NodeMemoryMajorPageFaults,
        M::NodeMemoryPageFaults,
        M::NodeMemoryRss,
        M::NodeMemoryUsage,
        M::NodeMemoryWorkingSet,
    ],
    network: Some([M::NodeNetworkErrors, M::NodeNetworkIo]),
    uptime: M::NodeUptime,
};
const POD_IDS: Ids = Ids {
    cpu_time: M::PodCpuTime,
    cpu_usage: M::PodCpuUsage,
    fs: [
        M::PodFilesystemAvailable,
        M::PodFilesystemCapacity,
        M::PodFilesystemUsage,
    ],
    memory: [
        M::PodMemoryAvailable,
        M::PodMemoryMajorPageFaults,
        M::PodMemoryPageFaults,
        M::PodMemoryRss,
        M::PodMemoryUsage,
        M::PodMemoryWorkingSet,
    ],
    network: Some([M::PodNetworkErrors, M::PodNetworkIo]),
    uptime: M::PodUptime,
};
const CONTAINER_IDS: Ids = Ids {
    cpu_time: M::ContainerCpuTime,
    cpu_usage: M::ContainerCpuUsage,
    fs: [
        M::ContainerFilesystemAvailable,
        M::ContainerFilesystemCapacity,
        M::ContainerFilesystemUsage,
    ],
    memory: [
        M::ContainerMemoryAvailable,
        M::ContainerMemoryMajorPageFaults,
        M::ContainerMemoryPageFaults,
        M::ContainerMemoryRss,
        M::ContainerMemoryUsage,
        M::ContainerMemoryWorkingSet,
    ],
    network: None,
    uptime: M::ContainerUptime,
};

/// One entity's stats, whatever its kind.
struct Entity<'s, 'a> {
    start: Option<u64>,
    cpu: Option<&'s CpuStats>,
    memory: Option<&'s MemoryStats>,
    fs: Option<&'s FsStats>,
    network: Option<&'s NetworkStats<'a>>,
    all_interfaces: bool,
}

/// Appends the metrics of `summary` to `b`.
pub fn append_summary(b: &mut MetricsBuilder<'static>, summary: &Summary<'_>, o: &Options<'_>) {
    if o.node {
        let n = &summary.node;
        b.resource();
        if o.attr_node_name {
            b.resource_attr("k8s.node.name", str_attr(&n.node_name));
        }
        b.scope(SCOPE_NAME, SCOPE_VERSION);
        entity(
            b,
            o,
            &NODE_IDS,
            &Entity {
                start: n.start_time,
                cpu: n.cpu.as_ref(),
                memory: n.memory.as_ref(),
                fs: n.fs.as_ref(),
                network: n.network.as_ref(),
                all_interfaces: o.node_all_interfaces,
            },
        );
    }
    for pod in &summary.pods {
        let pod_attrs = |b: &mut MetricsBuilder<'static>| {
            if o.attr_pod_uid {
                b.resource_attr("k8s.pod.uid", str_attr(&pod.pod_ref.uid));
            }
            if o.attr_pod_name {
                b.resource_attr("k8s.pod.name", str_attr(&pod.pod_ref.name));
            }
            if o.attr_namespace {
                b.resource_attr("k8s.namespace.name", str_attr(&pod.pod_ref.namespace));
            }
        };
        if o.pod {
            b.resource();
            pod_attrs(b);
            b.scope(SCOPE_NAME, SCOPE_VERSION);
            entity(
                b,
                o,
                &POD_IDS,
                &Entity {
                    start: pod.start_time,
                    cpu: pod.cpu.as_ref(),
                    memory: pod.memory.as_ref(),
                    fs: pod.ephemeral_storage.as_ref(),
                    network: pod.network.as_ref(),
                    all_interfaces: o.pod_all_interfaces,
                },
            );
        }
        if o.container {
            for c in &pod.containers {
                b.resource();
                pod_attrs(b);
                if o.attr_container_name {
                    b.resource_attr("k8s.container.name", str_attr(&c.name));
                }
                b.scope(SCOPE_NAME, SCOPE_VERSION);
                entity(
                    b,
                    o,
                    &CONTAINER_IDS,
                    &Entity {
                        start: c.start_time,
                        cpu: c.cpu.as_ref(),
                        memory: c.memory.as_ref(),
                        fs: c.rootfs.as_ref(),
                        network: None,
                        all_interfaces: false,
                    },
                );
            }
        }
        if o.volume {
            for v in &pod.volumes {
                b.resource();
                pod_attrs(b);
                if o.attr_volume_name {
                    b.resource_attr("k8s.volume.name", str_attr(&v.name));
                }
                b.scope(SCOPE_NAME, SCOPE_VERSION);
                let p = Points {
                    o,
                    start: o.receiver_start_unix_nanos,
                };
                p.int(b, M::VolumeAvailable, v.available_bytes);
                p.int(b, M::VolumeCapacity, v.capacity_bytes);
                p.int(b, M::VolumeInodes, v.inodes);
                p.int(b, M::VolumeInodesFree, v.inodes_free);
                p.int(b, M::VolumeInodesUsed, v.inodes_used);
            }
        }
    }
}

/// A string attribute; absent names are empty strings, as Go's zero value.
fn str_attr<'s>(s: &'s Option<std::borrow::Cow<'_, str>>) -> AttrValue<'s> {
    AttrValue::Str(s.as_deref().unwrap_or_default())
}

/// Adds points of one resource: all share its start time and the scrape's time.
struct Points<'o, 'c> {
    o: &'o Options<'c>,
    start: u64,
}

impl Points<'_, '_> {
    fn on(&self, id: MetricId) -> bool {
        self.o.enabled[id as usize]
    }

    fn int(&self, b: &mut MetricsBuilder<'static>, id: MetricId, v: Option<u64>) {
        if let Some(v) = v
            && self.on(id)
        {
            b.metric(DEFS[id as usize].spec());
            // Go's int64(uint64): wraps above 2^63.
            b.point(
                self.start,
                self.o.now_unix_nanos,
                NumberValue::Int(v as i64),
            );
        }
    }

    fn seconds(&self, b: &mut MetricsBuilder<'static>, id: MetricId, nanos: Option<u64>) {
        if let Some(v) = nanos
            && self.on(id)
        {
            b.metric(DEFS[id as usize].spec());
            b.point(
                self.start,
                self.o.now_unix_nanos,
                NumberValue::Double(v as f64 / 1e9),
            );
        }
    }
}

fn entity(b: &mut MetricsBuilder<'static>, o: &Options<'_>, ids: &Ids, e: &Entity<'_, '_>) {
    let p = Points {
        o,
        start: e.start.unwrap_or(0),
    };
    if let Some(cpu) = e.cpu {
        p.seconds(b, ids.cpu_time, cpu.usage_core_nano_seconds);
        p.seconds(b, ids.cpu_usage, cpu.usage_nano_cores);
    }
    if let Some(fs) = e.fs {
        p.int(b, ids.fs[0], fs.available_bytes);
        p.int(b, ids.fs[1], fs.capacity_bytes);
        p.int(b, ids.fs[2], fs.used_bytes);
    }
    if let Some(m) = e.memory {
        p.int(b, ids.memory[0], m.available_bytes);
        p.int(b, ids.memory[1], m.major_page_faults);
        p.int(b, ids.memory[2], m.page_faults);
        p.int(b, ids.memory[3], m.rss_bytes);
        p.int(b, ids.memory[4], m.usage_bytes);
        p.int(b, ids.memory[5], m.working_set_bytes);
    }
    if let (Some(net), Some([errors, io])) = (e.network, ids.network) {
        if e.all_interfaces {
            network(b, &p, errors, &net.interfaces, |i| {
                (i.rx_errors, i.tx_errors)
            });
            network(b, &p, io, &net.interfaces, |i| (i.rx_bytes, i.tx_bytes));
        } else {
            let default = [net.default_interface()];
            network(b, &p, errors, &default, |i| (i.rx_errors, i.tx_errors));
            network(b, &p, io, &default, |i| (i.rx_bytes, i.tx_bytes));
        }
    }
    if let Some(start) = e.start
        && p.on(ids.uptime)
    {
        // Go: int64(time.Since(startTime).Seconds()), truncated toward zero.
        let seconds = (o.now_unix_nanos as i128 - start as i128) / 1_000_000_000;
        b.metric(DEFS[ids.uptime as usize].spec());
        b.point(p.start, o.now_unix_nanos, NumberValue::Int(seconds as i64));
    }
}

/// One network metric over `interfaces`: a receive and a transmit point for each interface
/// that has the value.
fn network(
    b: &mut MetricsBuilder<'static>,
    p: &Points<'_, '_>,
    id: MetricId,
    interfaces: &[InterfaceStats<'_>],
    values: impl Fn(&InterfaceStats<'_>) -> (Option<u64>, Option<u64>),
) {
    if !p.on(id) {
        return;
    }
    b.metric(DEFS[id as usize].spec());
    for i in interfaces {
        let (rx, tx) = values(i);
        for (direction, v) in [("receive", rx), ("transmit", tx)] {
            if let Some(v) = v {
                b.point(p.start, p.o.now_unix_nanos, NumberValue::Int(v as i64));
                b.point_attr("interface", str_attr(&i.name));
                b.point_attr("direction", AttrValue::Str(direction));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defs_are_indexed_by_id_and_named_uniquely() {
        for (i, d) in DEFS.iter().enumerate() {
            assert_eq!(d.id as usize, i, "{}", d.name);
            assert_eq!(DEFS.iter().filter(|x| x.name == d.name).count(), 1);
            assert!(REFUSED.iter().all(|(n, _)| *n != d.name));
            // value types follow the Collector: cpu in doubles, everything else integers
            assert_eq!(d.int, !d.name.contains(".cpu."), "{}", d.name);
        }
        let sorted: Vec<_> = DEFS.iter().map(|d| d.name).collect();
        let mut want = sorted.clone();
        want.sort();
        assert_eq!(sorted, want, "DEFS in metadata.yaml (alphabetical) order");
    }

    #[test]
    fn default_enabled_set_is_the_collectors() {
        let off: Vec<_> = DEFS
            .iter()
            .filter(|d| !d.enabled_by_default)
            .map(|d| d.name)
            .collect();
        assert_eq!(
            off,
            ["container.uptime", "k8s.node.uptime", "k8s.pod.uptime"]
        );
    }
}
