//! The `resourcedetection` config: the Collector's names and defaults
//! (`processor/resourcedetectionprocessor/config.go` and each detector's `config.go` and
//! generated `metadata` config), checked when the config loads.
//!
//! Refused by name rather than accepted and ignored: detectors sluice does not have (`gcp`,
//! `azure`, `docker`, ...) in `detectors` or as a config section, the HTTP client settings the
//! Collector squashes into this config (only `timeout` is used), `ec2.tags` (needs the EC2 API),
//! the legacy top-level `attributes`, and resource attributes sluice cannot detect.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::component::ConfigError;
use sluice_engine::config_types::deserialize_duration;

/// The detectors sluice has, in the order the README lists them.
pub const SUPPORTED_DETECTORS: [&str; 4] = ["env", "system", "ec2", "eks"];

/// The Collector's other detectors (and their config sections): refused with a clear message.
const OTHER_COLLECTOR_DETECTORS: &[&str] = &[
    "akamai",
    "aks",
    "alibaba_ecs",
    "alibabacloud_ecs",
    "azure",
    "azurecontainerapps",
    "consul",
    "digitalocean",
    "docker",
    "dynatrace",
    "ecs",
    "elastic_beanstalk",
    "elasticbeanstalk",
    "gcp",
    "heroku",
    "hetzner",
    "ibmcloud_classic",
    "ibmcloud_vpc",
    "k8s_api",
    "k8snode",
    "kubeadm",
    "lambda",
    "nova",
    "openshift",
    "oraclecloud",
    "scaleway",
    "tencent_cvm",
    "upcloud",
    "vultr",
];

/// `confighttp.ClientConfig` fields, squashed into the Collector's config. sluice's detectors
/// talk to fixed local endpoints and use only `timeout`.
const HTTP_CLIENT_FIELDS: &[&str] = &[
    "endpoint",
    "proxy_url",
    "tls",
    "read_buffer_size",
    "write_buffer_size",
    "headers",
    "auth",
    "compression",
    "max_idle_conns",
    "max_idle_conns_per_host",
    "max_conns_per_host",
    "idle_conn_timeout",
    "disable_keep_alives",
    "http2_read_idle_timeout",
    "http2_ping_timeout",
    "cookies",
    "middlewares",
    "force_attempt_http2",
];

fn yes() -> bool {
    true
}
fn default_detectors() -> Vec<String> {
    vec!["env".into()]
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
/// The AWS SDK's standard retryer: 3 attempts, backoff up to 20 s.
fn aws_max_attempts() -> u32 {
    3
}
fn aws_max_backoff() -> Duration {
    Duration::from_secs(20)
}

/// The YAML shape of `processors.resourcedetection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDetectionConfig {
    /// Detectors in merge order: an earlier detector's attribute wins over a later one's.
    #[serde(default = "default_detectors")]
    pub detectors: Vec<String>,
    /// Detected attributes replace the payload's (true) or are added only where absent.
    #[serde(default = "yes", rename = "override")]
    pub override_existing: bool,
    /// Detection as a whole (every detector, retries included) ends after this.
    #[serde(default = "five_seconds", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Detect again this often (0: once, at start).
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub refresh_interval: Duration,
    /// An unreachable metadata service is an error (retried until `timeout`), not "not on
    /// this cloud".
    #[serde(default)]
    pub fail_on_missing_metadata: bool,
    #[serde(default)]
    pub env: EnvConfig,
    #[serde(default)]
    pub system: SystemConfig,
    #[serde(default)]
    pub ec2: Ec2Config,
    #[serde(default)]
    pub eks: EksConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    #[serde(default)]
    pub attributes: EnvAttributes,
}

/// Which keys of `OTEL_RESOURCE_ATTRIBUTES` are kept: `included` (empty: all), then minus
/// `excluded`; `*` matches any run of characters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvAttributes {
    #[serde(default)]
    pub included: Vec<String>,
    #[serde(default)]
    pub excluded: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Tried in order, first success wins; empty means `[dns, os]`.
    #[serde(default)]
    pub hostname_sources: Vec<String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, AttributeToggle>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Config {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, AttributeToggle>,
    #[serde(default = "aws_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "aws_max_backoff", deserialize_with = "deserialize_duration")]
    pub max_backoff: Duration,
    /// Deprecated in the Collector in favour of the top-level setting; either turns it on.
    #[serde(default)]
    pub fail_on_missing_metadata: bool,
}

impl Default for Ec2Config {
    fn default() -> Self {
        Ec2Config {
            tags: Vec::new(),
            resource_attributes: BTreeMap::new(),
            max_attempts: aws_max_attempts(),
            max_backoff: aws_max_backoff(),
            fail_on_missing_metadata: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EksConfig {
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, AttributeToggle>,
    /// The environment variable holding this node's name (set from the downward API), for
    /// reading the Node object when IMDS is out of reach.
    #[serde(default)]
    pub node_from_env_var: String,
    #[serde(default = "aws_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "aws_max_backoff", deserialize_with = "deserialize_duration")]
    pub max_backoff: Duration,
}

impl Default for EksConfig {
    fn default() -> Self {
        EksConfig {
            resource_attributes: BTreeMap::new(),
            node_from_env_var: String::new(),
            max_attempts: aws_max_attempts(),
            max_backoff: aws_max_backoff(),
        }
    }
}

/// `resource_attributes.<name>: {enabled: bool}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeToggle {
    pub enabled: bool,
}

/// One resource attribute a detector can emit.
pub struct AttributeSpec {
    pub name: &'static str,
    /// Enabled unless the config says otherwise (the Collector's generated default).
    pub default: bool,
    /// `Some(why)`: the Collector has it, sluice cannot detect it; enabling it is refused.
    pub unsupported: Option<&'static str>,
}

const fn on(name: &'static str) -> AttributeSpec {
    AttributeSpec {
        name,
        default: true,
        unsupported: None,
    }
}
const fn off(name: &'static str) -> AttributeSpec {
    AttributeSpec {
        name,
        default: false,
        unsupported: None,
    }
}
const fn not_in_sluice(name: &'static str, why: &'static str) -> AttributeSpec {
    AttributeSpec {
        name,
        default: false,
        unsupported: Some(why),
    }
}

const NOT_YET: &str = "sluice's system detector does not read it yet";
const NEEDS_EC2_API: &str =
    "it needs the EC2 API (ec2:DescribeInstances), which sluice does not call";

/// The system detector's attributes (`internal/system/metadata.yaml`).
pub const SYSTEM_ATTRIBUTES: &[AttributeSpec] = &[
    on("host.name"),
    on("os.type"),
    off("host.id"),
    off("host.arch"),
    off("os.description"),
    not_in_sluice("host.cpu.cache.l2.size", NOT_YET),
    not_in_sluice("host.cpu.family", NOT_YET),
    not_in_sluice("host.cpu.model.id", NOT_YET),
    not_in_sluice("host.cpu.model.name", NOT_YET),
    not_in_sluice("host.cpu.stepping", NOT_YET),
    not_in_sluice("host.cpu.vendor.id", NOT_YET),
    not_in_sluice("host.interface", NOT_YET),
    not_in_sluice("host.ip", NOT_YET),
    not_in_sluice("host.mac", NOT_YET),
    not_in_sluice("os.build.id", NOT_YET),
    not_in_sluice("os.name", NOT_YET),
    not_in_sluice("os.version", NOT_YET),
];

/// The ec2 detector's attributes (`internal/aws/ec2/metadata.yaml`): all on.
pub const EC2_ATTRIBUTES: &[AttributeSpec] = &[
    on("cloud.provider"),
    on("cloud.platform"),
    on("cloud.region"),
    on("cloud.account.id"),
    on("cloud.availability_zone"),
    on("host.id"),
    on("host.image.id"),
    on("host.type"),
    on("host.name"),
];

/// The eks detector's attributes (`internal/aws/eks/metadata.yaml`): provider and platform
/// on, the instance's attributes (from IMDS) off.
pub const EKS_ATTRIBUTES: &[AttributeSpec] = &[
    on("cloud.provider"),
    on("cloud.platform"),
    off("cloud.region"),
    off("cloud.account.id"),
    off("cloud.availability_zone"),
    off("host.id"),
    off("host.image.id"),
    off("host.type"),
    off("host.name"),
    not_in_sluice("k8s.cluster.name", NEEDS_EC2_API),
];

/// The enabled attributes of one detector, resolved from its table and the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enabled(Vec<&'static str>);

impl Enabled {
    pub fn resolve(
        specs: &'static [AttributeSpec],
        config: &BTreeMap<String, AttributeToggle>,
    ) -> Result<Enabled, ConfigError> {
        for (name, toggle) in config {
            let path = format!("resource_attributes.{name}");
            match specs.iter().find(|s| s.name == name) {
                None => {
                    let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
                    return Err(ConfigError::new(
                        path,
                        format!(
                            "unknown resource attribute {name:?}; this detector has: {}",
                            known.join(", ")
                        ),
                    ));
                }
                Some(AttributeSpec {
                    unsupported: Some(why),
                    ..
                }) if toggle.enabled => {
                    return Err(ConfigError::new(
                        format!("{path}.enabled"),
                        format!("{name} cannot be enabled in sluice: {why}"),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(Enabled(
            specs
                .iter()
                .filter(|s| config.get(s.name).map_or(s.default, |t| t.enabled))
                .map(|s| s.name)
                .collect(),
        ))
    }

    pub fn on(&self, name: &str) -> bool {
        self.0.contains(&name)
    }

    pub fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.on(n))
    }

    /// The enabled ones of `values`, in their order.
    pub fn pick<'a>(
        &self,
        values: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Vec<(String, String)> {
        values
            .into_iter()
            .filter(|(k, _)| self.on(k))
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

/// `system.hostname_sources` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostnameSource {
    /// The hosts file, then the canonical name, then a reverse lookup (the FQDN).
    Dns,
    /// The kernel's hostname.
    Os,
    /// The canonical name from the resolver.
    Cname,
    /// A reverse lookup of the host's addresses.
    Lookup,
}

impl HostnameSource {
    pub fn name(self) -> &'static str {
        match self {
            HostnameSource::Dns => "dns",
            HostnameSource::Os => "os",
            HostnameSource::Cname => "cname",
            HostnameSource::Lookup => "lookup",
        }
    }

    fn parse(s: &str) -> Option<HostnameSource> {
        use HostnameSource::*;
        [Dns, Os, Cname, Lookup].into_iter().find(|h| h.name() == s)
    }
}

/// A detector named in `detectors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    Env,
    System,
    Ec2,
    Eks,
}

impl DetectorKind {
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Env => "env",
            DetectorKind::System => "system",
            DetectorKind::Ec2 => "ec2",
            DetectorKind::Eks => "eks",
        }
    }
}

/// The config, checked and resolved.
#[derive(Debug, Clone)]
pub struct Checked {
    pub raw: ResourceDetectionConfig,
    pub detectors: Vec<DetectorKind>,
    pub hostname_sources: Vec<HostnameSource>,
    pub system_attributes: Enabled,
    pub ec2_attributes: Enabled,
    pub eks_attributes: Enabled,
}

/// Parses and checks a `resourcedetection` config (the factory's `parse_config`).
pub fn parse(config: &serde_json::Value) -> Result<Checked, ConfigError> {
    refuse_collector_only_fields(config)?;
    let raw: ResourceDetectionConfig = sluice_engine::component::parse_config(config)?;
    check(raw)
}

fn refuse_collector_only_fields(config: &serde_json::Value) -> Result<(), ConfigError> {
    let Some(map) = config.as_object() else {
        return Ok(()); // serde reports the wrong shape
    };
    for key in map.keys() {
        if OTHER_COLLECTOR_DETECTORS.contains(&key.as_str()) {
            return Err(ConfigError::new(
                key.as_str(),
                format!(
                    "the {key} detector is not supported by sluice (supported: {}), so its settings cannot be used",
                    SUPPORTED_DETECTORS.join(", ")
                ),
            ));
        }
        if HTTP_CLIENT_FIELDS.contains(&key.as_str()) {
            return Err(ConfigError::new(
                key.as_str(),
                "HTTP client settings are not supported: sluice's detectors talk to fixed local endpoints (the instance metadata service, the in-cluster API server); only `timeout` applies",
            ));
        }
        if key == "attributes" {
            return Err(ConfigError::new(
                "attributes",
                "the top-level `attributes` filter was removed from the Collector; filter with `env.attributes` or a `resource` processor",
            ));
        }
    }
    Ok(())
}

fn check(raw: ResourceDetectionConfig) -> Result<Checked, ConfigError> {
    if raw.detectors.is_empty() {
        return Err(ConfigError::new(
            "detectors",
            format!(
                "at least one detector is needed (supported: {})",
                SUPPORTED_DETECTORS.join(", ")
            ),
        ));
    }
    let mut detectors = Vec::with_capacity(raw.detectors.len());
    for (i, name) in raw.detectors.iter().enumerate() {
        // The Collector trims the names.
        let kind = match name.trim() {
            "env" => DetectorKind::Env,
            "system" => DetectorKind::System,
            "ec2" => DetectorKind::Ec2,
            "eks" => DetectorKind::Eks,
            other if OTHER_COLLECTOR_DETECTORS.contains(&other) => {
                return Err(ConfigError::new(
                    format!("detectors[{i}]"),
                    format!(
                        "the {other} detector is not supported by sluice; supported: {}",
                        SUPPORTED_DETECTORS.join(", ")
                    ),
                ));
            }
            other => {
                return Err(ConfigError::new(
                    format!("detectors[{i}]"),
                    format!(
                        "invalid detector key: {other:?}; supported: {}",
                        SUPPORTED_DETECTORS.join(", ")
                    ),
                ));
            }
        };
        detectors.push(kind);
    }
    if raw.timeout.is_zero() {
        return Err(ConfigError::new(
            "timeout",
            "must be greater than 0: detection would have no time at all",
        ));
    }
    let hostname_sources = if raw.system.hostname_sources.is_empty() {
        vec![HostnameSource::Dns, HostnameSource::Os]
    } else {
        raw.system
            .hostname_sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                HostnameSource::parse(s).ok_or_else(|| {
                    ConfigError::new(
                        format!("system.hostname_sources[{i}]"),
                        format!(
                            "hostname_sources contains invalid value: {s:?}; valid: dns, os, cname, lookup"
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    if !raw.ec2.tags.is_empty() {
        return Err(ConfigError::new(
            "ec2.tags",
            "EC2 instance tags need the EC2 API (ec2:DescribeTags), which sluice does not call; add the values with a `resource` processor instead",
        ));
    }
    for (path, attempts) in [
        ("ec2.max_attempts", raw.ec2.max_attempts),
        ("eks.max_attempts", raw.eks.max_attempts),
    ] {
        if attempts == 0 {
            return Err(ConfigError::new(path, "must be at least 1"));
        }
    }
    let system_attributes = Enabled::resolve(SYSTEM_ATTRIBUTES, &raw.system.resource_attributes)
        .map_err(|e| e.within("system"))?;
    let ec2_attributes = Enabled::resolve(EC2_ATTRIBUTES, &raw.ec2.resource_attributes)
        .map_err(|e| e.within("ec2"))?;
    let eks_attributes = Enabled::resolve(EKS_ATTRIBUTES, &raw.eks.resource_attributes)
        .map_err(|e| e.within("eks"))?;
    Ok(Checked {
        raw,
        detectors,
        hostname_sources,
        system_attributes,
        ec2_attributes,
        eks_attributes,
    })
}
