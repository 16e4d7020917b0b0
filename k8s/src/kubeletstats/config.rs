//! The `kubeletstats` receiver's config: the Collector's field names and defaults
//! (`receiver/kubeletstatsreceiver/config.go` with the squashed scraper controller, kubelet
//! client, TLS and metrics-builder settings), checked at load.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::component::ConfigError;
use sluice_engine::config_types::deserialize_duration;
use sluice_tls::{Opaque, TlsClientSetting, TpmSetting, ZeroDuration};

use super::metrics::{self, Support};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletStatsConfig {
    /// How often `/stats/summary` is scraped.
    #[serde(
        default = "default_collection_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub collection_interval: Duration,
    /// Wait before the first scrape.
    #[serde(
        default = "default_initial_delay",
        deserialize_with = "deserialize_duration"
    )]
    pub initial_delay: Duration,
    /// Per-scrape deadline; 0 = the Collector's "none", which sluice bounds by
    /// `collection_interval` so scrapes never pile up.
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub auth_type: AuthType,
    /// kubeconfig context for `auth_type: kubeConfig` (empty: the current context).
    #[serde(default)]
    pub context: String,
    /// The kubelet (`host:port` or a URL); with `kubeConfig`, the node's name.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub dialer: Dialer,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    // The squashed `configtls.Config` (client side, without `insecure` and
    // `server_name_override`, which the kubelet client does not have).
    pub ca_file: Option<String>,
    pub ca_pem: Option<Opaque>,
    #[serde(default)]
    pub include_system_ca_certs_pool: bool,
    pub cert_file: Option<String>,
    pub cert_pem: Option<Opaque>,
    pub key_file: Option<String>,
    pub key_pem: Option<Opaque>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub include_insecure_cipher_suites: bool,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    pub reload_interval: Option<ZeroDuration>,
    pub tpm: Option<TpmSetting>,
    /// Refused when non-empty: see [`KubeletStatsConfig::validate`].
    #[serde(default)]
    pub extra_metadata_labels: Vec<String>,
    /// `None`: the default groups (container, pod, node).
    pub metric_groups: Option<Vec<MetricGroup>>,
    /// Refused when set: see [`KubeletStatsConfig::validate`].
    pub k8s_api_config: Option<serde_json::Value>,
    /// The node's name; only the node-utilization metrics (not supported) use it.
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub collect_all_network_interfaces: NetworkInterfaces,
    /// `metrics.<name>.enabled`.
    #[serde(default)]
    pub metrics: BTreeMap<String, Toggle>,
    /// `resource_attributes.<name>.enabled`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, Toggle>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum AuthType {
    /// Client certificate (`cert_file`/`key_file`), the Collector's default.
    #[default]
    #[serde(rename = "tls")]
    Tls,
    /// The pod's service account token as a bearer token; its directory's `ca.crt` trusted.
    #[serde(rename = "serviceAccount")]
    ServiceAccount,
    /// Plain HTTP to the read-only port (10255).
    #[serde(rename = "none")]
    None,
    /// Through the API server's node proxy, with the kubeconfig's credentials.
    #[serde(rename = "kubeConfig")]
    KubeConfig,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Tls => "tls",
            AuthType::ServiceAccount => "serviceAccount",
            AuthType::None => "none",
            AuthType::KubeConfig => "kubeConfig",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum MetricGroup {
    Container,
    Pod,
    Node,
    Volume,
}

/// `dialer` of the Collector's `confignet.TCPAddrConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dialer {
    /// TCP connect timeout (0: none beyond the scrape's own deadline).
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaces {
    #[serde(default)]
    pub pod: bool,
    #[serde(default)]
    pub node: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

fn default_collection_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_initial_delay() -> Duration {
    Duration::from_secs(1)
}

/// The resource attributes the Collector's metadata defines (all enabled by default).
pub const RESOURCE_ATTRIBUTES: &[&str] = &[
    "aws.volume.id",
    "container.id",
    "fs.type",
    "gce.pd.name",
    "glusterfs.endpoints.name",
    "glusterfs.path",
    "k8s.container.name",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.persistentvolumeclaim.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.volume.name",
    "k8s.volume.type",
    "partition",
];

impl KubeletStatsConfig {
    /// Everything that can be checked without files or the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.collection_interval.is_zero() {
            return Err(ConfigError::new(
                "collection_interval",
                "must be greater than zero",
            ));
        }
        if let Some(first) = self.extra_metadata_labels.first() {
            let known = ["container.id", "k8s.volume.type"];
            let message = if known.contains(&first.as_str()) {
                format!(
                    "{first:?} is not supported by sluice yet (it needs the kubelet's /pods \
                     endpoint on every scrape); remove extra_metadata_labels, or add \
                     container.id with the k8sattributes processor"
                )
            } else {
                format!("label {first:?} is not supported; the Collector knows {known:?}")
            };
            return Err(ConfigError::new("extra_metadata_labels", message));
        }
        if self.k8s_api_config.is_some() {
            return Err(ConfigError::new(
                "k8s_api_config",
                "is not supported by sluice yet (persistent volume labels and node capacity \
                 come from the Kubernetes API); remove it",
            ));
        }
        for (name, toggle) in &self.metrics {
            match metrics::lookup(name) {
                Some(Support::Supported(_)) => {}
                Some(Support::Refused(why)) if toggle.enabled => {
                    return Err(ConfigError::new(
                        format!("metrics.{name}.enabled"),
                        format!("{name} is not supported by sluice: {why}"),
                    ));
                }
                Some(Support::Refused(_)) => {}
                None => {
                    return Err(ConfigError::new(
                        format!("metrics.{name}"),
                        format!(
                            "unknown metric; the kubeletstats metrics are: {}",
                            metrics::DEFS
                                .iter()
                                .map(|d| d.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
        for name in self.resource_attributes.keys() {
            if !RESOURCE_ATTRIBUTES.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("resource_attributes.{name}"),
                    format!(
                        "unknown resource attribute; known: {}",
                        RESOURCE_ATTRIBUTES.join(", ")
                    ),
                ));
            }
        }
        match self.auth_type {
            AuthType::Tls => {
                let set = |file: &Option<String>, pem: &Option<Opaque>| {
                    file.as_deref().is_some_and(|f| !f.is_empty())
                        || pem.as_ref().is_some_and(|p| !p.0.is_empty())
                };
                if !set(&self.cert_file, &self.cert_pem) || !set(&self.key_file, &self.key_pem) {
                    return Err(ConfigError::new(
                        "auth_type",
                        "`tls` (the default) authenticates with a client certificate: set \
                         cert_file and key_file (or use auth_type serviceAccount)",
                    ));
                }
            }
            _ if !self.endpoint.is_empty() && endpoint_host(&self.endpoint).is_empty() => {
                // `https://${env:K8S_NODE_NAME}:10250` with the variable unset: caught here,
                // not as a failed scrape every interval.
                return Err(ConfigError::new(
                    "endpoint",
                    format!(
                        "{:?} names no host (is the environment variable that should name \
                         the node set?)",
                        self.endpoint
                    ),
                ));
            }
            AuthType::KubeConfig if self.endpoint.contains('/') => {
                return Err(ConfigError::new(
                    "endpoint",
                    "with auth_type kubeConfig the endpoint is the node's name (it is reached \
                     through the API server at /api/v1/nodes/<name>/proxy/), not a URL",
                ));
            }
            _ => {}
        }
        self.tls_setting()
            .validate()
            .map_err(|e| ConfigError::new(e.field().unwrap_or_default(), e.detail()))?;
        Ok(())
    }

    /// The squashed TLS fields as the shared client setting. As in the Collector, the
    /// configured CA (if any) is trusted in addition to the system's roots.
    pub fn tls_setting(&self) -> TlsClientSetting {
        TlsClientSetting {
            insecure: false,
            insecure_skip_verify: self.insecure_skip_verify,
            server_name_override: None,
            ca_file: self.ca_file.clone(),
            ca_pem: self.ca_pem.clone(),
            include_system_ca_certs_pool: true,
            cert_file: self.cert_file.clone(),
            cert_pem: self.cert_pem.clone(),
            key_file: self.key_file.clone(),
            key_pem: self.key_pem.clone(),
            min_version: self.min_version.clone(),
            max_version: self.max_version.clone(),
            cipher_suites: self.cipher_suites.clone(),
            include_insecure_cipher_suites: self.include_insecure_cipher_suites,
            curve_preferences: self.curve_preferences.clone(),
            reload_interval: self.reload_interval.clone(),
            tpm: self.tpm.clone(),
        }
    }

    /// The metric groups to collect (the Collector's default when unset).
    pub fn groups(&self) -> Vec<MetricGroup> {
        self.metric_groups
            .clone()
            .unwrap_or_else(|| vec![MetricGroup::Container, MetricGroup::Pod, MetricGroup::Node])
    }

    /// Which metrics are on: the defaults, with `metrics.<name>.enabled` applied.
    pub fn enabled_metrics(&self) -> [bool; metrics::COUNT] {
        let mut on = metrics::DEFS.map(|d| d.enabled_by_default);
        for (name, toggle) in &self.metrics {
            if let Some(Support::Supported(id)) = metrics::lookup(name) {
                on[id as usize] = toggle.enabled;
            }
        }
        on
    }

    /// Whether resource attribute `name` is on (all are by default).
    pub fn resource_attribute_enabled(&self, name: &str) -> bool {
        self.resource_attributes.get(name).is_none_or(|t| t.enabled)
    }

    /// The per-scrape deadline.
    pub fn scrape_timeout(&self) -> Duration {
        if self.timeout.is_zero() {
            self.collection_interval
        } else {
            self.timeout
        }
    }
}

/// The host of an endpoint (`https://node-1:10250`, `node-1:10250`, `node-1`, `[::1]:10250`):
/// what is left once the scheme, the path and the port are taken off.
fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.starts_with('[') {
        return authority.split(']').next().unwrap_or_default();
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}
