//! The `k8sattributes` config: the Collector's field names and defaults
//! (`processor/k8sattributesprocessor/config.go`), checked and compiled once at load into
//! [`Rules`] (what to extract) and [`Association`]s (how to find a resource's pod).

use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use sluice_engine::component::ConfigError;
use sluice_engine::config_types::deserialize_duration;

/// `auth_type`: how the API server is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    /// No credentials: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the
    /// server's certificate not verified (the Collector's `none`).
    #[serde(rename = "none")]
    None,
    /// In-cluster: the pod's service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token
    /// and CA under `/var/run/secrets/kubernetes.io/serviceaccount/`).
    #[default]
    #[serde(rename = "serviceAccount")]
    ServiceAccount,
    /// `KUBECONFIG`, else `~/.kube/config`, with `context` (default: the current one).
    #[serde(rename = "kubeConfig")]
    KubeConfig,
    /// Client certificates: refused (see [`K8sAttributesConfig::compile`]).
    #[serde(rename = "tls")]
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sAttributesConfig {
    #[serde(default)]
    pub auth_type: AuthType,
    /// The kubeconfig context for `auth_type: kubeConfig` (empty: the current context).
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub extract: ExtractConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub pod_association: Vec<PodAssociationConfig>,
    #[serde(default)]
    pub exclude: ExcludeConfig,
    #[serde(default)]
    pub wait_for_metadata: bool,
    #[serde(
        default = "default_wait_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub wait_for_metadata_timeout: Duration,
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// `None`: the Collector's defaults ([`DEFAULT_METADATA`]).
    pub metadata: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Vec<FieldExtractConfig>,
    #[serde(default)]
    pub annotations: Vec<FieldExtractConfig>,
    /// Deployment names from the ReplicaSet name (minus its pod-template hash) instead of a
    /// watch of ReplicaSets.
    #[serde(default)]
    pub deployment_name_from_replicaset: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldExtractConfig {
    #[serde(default)]
    pub tag_name: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub key_regex: String,
    #[serde(default)]
    pub from: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub node_from_env_var: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub fields: Vec<FieldFilterConfig>,
    #[serde(default)]
    pub labels: Vec<FieldFilterConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldFilterConfig {
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub op: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodAssociationConfig {
    #[serde(default)]
    pub sources: Vec<AssociationSourceConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationSourceConfig {
    pub from: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeConfig {
    #[serde(default)]
    pub pods: Vec<ExcludePodConfig>,
}

impl Default for ExcludeConfig {
    fn default() -> Self {
        ExcludeConfig {
            pods: vec![
                ExcludePodConfig {
                    name: "jaeger-agent".into(),
                },
                ExcludePodConfig {
                    name: "jaeger-collector".into(),
                },
            ],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludePodConfig {
    pub name: String,
}

/// `extract.metadata` when not set: the Collector's default list.
pub const DEFAULT_METADATA: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.start_time",
    "k8s.deployment.name",
    "k8s.node.name",
    "container.image.name",
    "container.image.tag",
];

/// Every `extract.metadata` name sluice extracts.
pub const SUPPORTED_METADATA: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.start_time",
    "k8s.pod.ip",
    "k8s.pod.hostname",
    "k8s.deployment.name",
    "k8s.deployment.uid",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.daemonset.name",
    "k8s.daemonset.uid",
    "k8s.statefulset.name",
    "k8s.statefulset.uid",
    "k8s.job.name",
    "k8s.job.uid",
    "k8s.cronjob.name",
    "k8s.node.name",
    "k8s.node.uid",
    "k8s.cluster.uid",
    "k8s.container.name",
    "container.id",
    "container.image.name",
    "container.image.tag",
];

/// What to extract, compiled from `extract`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub namespace: bool,
    pub pod_name: bool,
    pub pod_uid: bool,
    pub start_time: bool,
    pub pod_ip: bool,
    pub pod_hostname: bool,
    pub deployment_name: bool,
    pub deployment_uid: bool,
    pub replicaset_name: bool,
    pub replicaset_uid: bool,
    pub daemonset_name: bool,
    pub daemonset_uid: bool,
    pub statefulset_name: bool,
    pub statefulset_uid: bool,
    pub job_name: bool,
    pub job_uid: bool,
    pub cronjob_name: bool,
    pub node_name: bool,
    pub node_uid: bool,
    pub cluster_uid: bool,
    pub container_name: bool,
    pub container_id: bool,
    pub container_image_name: bool,
    pub container_image_tag: bool,
    pub labels: Vec<FieldRule>,
    pub annotations: Vec<FieldRule>,
    pub deployment_name_from_replicaset: bool,
}

impl Rules {
    /// Whether per-container attributes are needed (pods keep their containers then).
    pub fn containers(&self) -> bool {
        self.container_name
            || self.container_id
            || self.container_image_name
            || self.container_image_tag
    }

    /// Whether the ReplicaSet watch is needed: deployment name or uid from its owner.
    pub fn watch_replicasets(&self) -> bool {
        (self.deployment_name && !self.deployment_name_from_replicaset) || self.deployment_uid
    }

    /// Whether namespaces are watched: their labels or annotations, or the cluster uid (the
    /// `kube-system` namespace's).
    pub fn watch_namespaces(&self) -> bool {
        self.cluster_uid || self.field_rules().any(|r| r.from == From::Namespace)
    }

    /// Whether nodes are watched: their labels or annotations, or `k8s.node.uid`.
    pub fn watch_nodes(&self) -> bool {
        self.node_uid || self.field_rules().any(|r| r.from == From::Node)
    }

    fn field_rules(&self) -> impl Iterator<Item = &FieldRule> {
        self.labels.iter().chain(&self.annotations)
    }
}

/// Where a label or annotation is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Pod,
    Namespace,
    Node,
}

/// One `extract.labels` / `extract.annotations` entry.
#[derive(Debug, Clone)]
pub struct FieldRule {
    /// The attribute name (`tag_name`, or the default `k8s.<from>.<labels|annotations>.<key>`;
    /// with `key_regex`, may hold `$1`-style references to its groups).
    pub name: String,
    pub key: Option<String>,
    /// Anchored (`^(?:...)$`), as the Collector compiles it.
    pub key_regex: Option<Regex>,
    /// `name` refers to groups of `key_regex`.
    pub name_has_refs: bool,
    pub from: From,
}

impl FieldRule {
    /// Adds what this rule extracts from `metadata` (labels or annotations) to `out`, as the
    /// Collector's `extractFromMetadata` does; `kind` is `labels` or `annotations`.
    pub fn extract(
        &self,
        metadata: &std::collections::BTreeMap<String, String>,
        kind: &str,
        out: &mut Vec<(String, String)>,
    ) {
        match (&self.key_regex, &self.key) {
            (Some(re), _) => {
                for (k, v) in metadata {
                    if v.is_empty() || !re.is_match(k) {
                        continue;
                    }
                    let name = if self.name_has_refs {
                        let mut expanded = String::new();
                        if let Some(caps) = re.captures(k) {
                            caps.expand(&self.name, &mut expanded);
                        }
                        expanded
                    } else if self.name.is_empty() {
                        format!("k8s.{}.{kind}.{k}", self.source_noun())
                    } else {
                        // A fixed tag_name with a regex: every match writes it (the last wins).
                        self.name.clone()
                    };
                    set(out, name, v.clone());
                }
            }
            (None, Some(key)) => {
                if let Some(v) = metadata.get(key) {
                    set(out, self.name.clone(), v.clone());
                }
            }
            (None, None) => {}
        }
    }

    fn source_noun(&self) -> &'static str {
        match self.from {
            From::Pod => "pod",
            From::Namespace => "namespace",
            From::Node => "node",
        }
    }
}

/// `out[name] = value` on a list of pairs (a later rule replaces, as a Go map assignment).
pub fn set(out: &mut Vec<(String, String)>, name: String, value: String) {
    match out.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => out.push((name, value)),
    }
}

/// Where one association source reads its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The peer address of the data (the payload's origin).
    Connection,
    /// A resource attribute (a string value).
    ResourceAttribute(String),
}

/// One `pod_association` entry: all its sources must resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub sources: Vec<Source>,
}

/// The most sources one association may have (the Collector's `PodIdentifierMaxLength`).
pub const MAX_SOURCES: usize = 4;

/// The label filter of the pod watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: String,
    pub op: FilterOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Equals,
    NotEquals,
    Exists,
    DoesNotExist,
}

/// The config, checked and compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub auth_type: AuthType,
    pub context: String,
    pub passthrough: bool,
    pub rules: Rules,
    pub associations: Vec<Association>,
    /// `filter.node`, or the value of `filter.node_from_env_var` (read at start).
    pub node: Option<String>,
    pub node_from_env_var: Option<String>,
    pub namespace: Option<String>,
    pub field_filters: Vec<(String, String, bool)>,
    pub label_filters: Vec<LabelFilter>,
    pub exclude: Vec<Regex>,
    pub wait_for_metadata: bool,
    pub wait_for_metadata_timeout: Duration,
}

impl Compiled {
    /// The pod watch's field selector: `filter.fields` and `spec.nodeName=<node>`.
    pub fn field_selector(&self, node: Option<&str>) -> Option<String> {
        let mut terms: Vec<String> = self
            .field_filters
            .iter()
            .map(|(k, v, eq)| format!("{k}{}{v}", if *eq { "=" } else { "!=" }))
            .collect();
        if let Some(n) = node {
            terms.push(format!("spec.nodeName={n}"));
        }
        (!terms.is_empty()).then(|| terms.join(","))
    }

    /// The pod watch's label selector from `filter.labels`.
    pub fn label_selector(&self) -> Option<String> {
        let terms: Vec<String> = self
            .label_filters
            .iter()
            .map(|f| match f.op {
                FilterOp::Equals => format!("{}={}", f.key, f.value),
                FilterOp::NotEquals => format!("{}!={}", f.key, f.value),
                FilterOp::Exists => f.key.clone(),
                FilterOp::DoesNotExist => format!("!{}", f.key),
            })
            .collect();
        (!terms.is_empty()).then(|| terms.join(","))
    }
}

impl K8sAttributesConfig {
    /// Checks the config as the Collector's `Validate` does and compiles it.
    pub fn compile(&self) -> Result<Compiled, ConfigError> {
        if self.auth_type == AuthType::Tls {
            return Err(ConfigError::new(
                "auth_type",
                "`tls` (client certificates for the API server) is not supported; use `serviceAccount`, `kubeConfig` or `none`",
            ));
        }
        let mut rules = Rules {
            deployment_name_from_replicaset: self.extract.deployment_name_from_replicaset,
            ..Rules::default()
        };
        let metadata: Vec<String> = match &self.extract.metadata {
            Some(m) => m.clone(),
            None => DEFAULT_METADATA.iter().map(|s| s.to_string()).collect(),
        };
        for (i, field) in metadata.iter().enumerate() {
            let flag = match field.as_str() {
                "k8s.namespace.name" => &mut rules.namespace,
                "k8s.pod.name" => &mut rules.pod_name,
                "k8s.pod.uid" => &mut rules.pod_uid,
                "k8s.pod.start_time" => &mut rules.start_time,
                "k8s.pod.ip" => &mut rules.pod_ip,
                "k8s.pod.hostname" => &mut rules.pod_hostname,
                "k8s.deployment.name" => &mut rules.deployment_name,
                "k8s.deployment.uid" => &mut rules.deployment_uid,
                "k8s.replicaset.name" => &mut rules.replicaset_name,
                "k8s.replicaset.uid" => &mut rules.replicaset_uid,
                "k8s.daemonset.name" => &mut rules.daemonset_name,
                "k8s.daemonset.uid" => &mut rules.daemonset_uid,
                "k8s.statefulset.name" => &mut rules.statefulset_name,
                "k8s.statefulset.uid" => &mut rules.statefulset_uid,
                "k8s.job.name" => &mut rules.job_name,
                "k8s.job.uid" => &mut rules.job_uid,
                "k8s.cronjob.name" => &mut rules.cronjob_name,
                "k8s.node.name" => &mut rules.node_name,
                "k8s.node.uid" => &mut rules.node_uid,
                "k8s.cluster.uid" => &mut rules.cluster_uid,
                "k8s.container.name" => &mut rules.container_name,
                "container.id" => &mut rules.container_id,
                "container.image.name" => &mut rules.container_image_name,
                "container.image.tag" => &mut rules.container_image_tag,
                other => {
                    return Err(ConfigError::new(
                        format!("extract.metadata[{i}]"),
                        format!(
                            "\"{other}\" is not a supported metadata field; supported: {}",
                            SUPPORTED_METADATA.join(", ")
                        ),
                    ));
                }
            };
            *flag = true;
        }
        rules.labels = compile_field_rules(&self.extract.labels, "labels")?;
        rules.annotations = compile_field_rules(&self.extract.annotations, "annotations")?;

        let mut associations = Vec::new();
        for (i, a) in self.pod_association.iter().enumerate() {
            let path = format!("pod_association[{i}].sources");
            if a.sources.is_empty() {
                return Err(ConfigError::new(
                    path,
                    "an association needs at least one source",
                ));
            }
            if a.sources.len() > MAX_SOURCES {
                return Err(ConfigError::new(
                    path,
                    format!("at most {MAX_SOURCES} sources per association"),
                ));
            }
            let mut sources = Vec::new();
            for (j, s) in a.sources.iter().enumerate() {
                sources.push(match s.from.as_str() {
                    "connection" => Source::Connection,
                    "resource_attribute" if !s.name.is_empty() => {
                        Source::ResourceAttribute(s.name.clone())
                    }
                    "resource_attribute" => {
                        return Err(ConfigError::new(
                            format!("{path}[{j}].name"),
                            "a resource_attribute source needs the attribute's name",
                        ));
                    }
                    other => {
                        return Err(ConfigError::new(
                            format!("{path}[{j}].from"),
                            format!("\"{other}\": expected `connection` or `resource_attribute`"),
                        ));
                    }
                });
            }
            associations.push(Association { sources });
        }

        let mut field_filters = Vec::new();
        for (i, f) in self.filter.fields.iter().enumerate() {
            let eq = match f.op.as_str() {
                "" | "equals" => true,
                "not-equals" => false,
                other => {
                    return Err(ConfigError::new(
                        format!("filter.fields[{i}].op"),
                        format!(
                            "field filters don't support operator: '{other}' (equals, not-equals)"
                        ),
                    ));
                }
            };
            field_filters.push((f.key.clone(), f.value.clone(), eq));
        }
        let mut label_filters = Vec::new();
        for (i, f) in self.filter.labels.iter().enumerate() {
            let op = match f.op.as_str() {
                "" | "equals" => FilterOp::Equals,
                "not-equals" => FilterOp::NotEquals,
                "exists" => FilterOp::Exists,
                "does-not-exist" => FilterOp::DoesNotExist,
                other => {
                    return Err(ConfigError::new(
                        format!("filter.labels[{i}].op"),
                        format!(
                            "label filters don't support operator: '{other}' (equals, not-equals, exists, does-not-exist)"
                        ),
                    ));
                }
            };
            label_filters.push(LabelFilter {
                key: f.key.clone(),
                value: f.value.clone(),
                op,
            });
        }
        let mut exclude = Vec::new();
        for (i, p) in self.exclude.pods.iter().enumerate() {
            exclude.push(
                Regex::new(&p.name).map_err(|e| {
                    ConfigError::new(format!("exclude.pods[{i}].name"), e.to_string())
                })?,
            );
        }
        Ok(Compiled {
            auth_type: self.auth_type,
            context: self.context.clone(),
            passthrough: self.passthrough,
            rules,
            associations,
            node: (!self.filter.node.is_empty()).then(|| self.filter.node.clone()),
            node_from_env_var: (!self.filter.node_from_env_var.is_empty())
                .then(|| self.filter.node_from_env_var.clone()),
            namespace: (!self.filter.namespace.is_empty()).then(|| self.filter.namespace.clone()),
            field_filters,
            label_filters,
            exclude,
            wait_for_metadata: self.wait_for_metadata,
            wait_for_metadata_timeout: self.wait_for_metadata_timeout,
        })
    }
}

fn compile_field_rules(
    rules: &[FieldExtractConfig],
    kind: &str,
) -> Result<Vec<FieldRule>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("extract.{kind}[{i}]");
        let from = match r.from.as_str() {
            "" | "pod" => From::Pod,
            "namespace" => From::Namespace,
            "node" => From::Node,
            other => {
                return Err(ConfigError::new(
                    format!("{path}.from"),
                    format!("\"{other}\" is not supported: pod, namespace or node"),
                ));
            }
        };
        if !r.key.is_empty() && !r.key_regex.is_empty() {
            return Err(ConfigError::new(
                path,
                "Out of Key or KeyRegex only one option is expected to be configured at a time",
            ));
        }
        let noun = match from {
            From::Pod => "pod",
            From::Namespace => "namespace",
            From::Node => "node",
        };
        let (key, key_regex) = if !r.key_regex.is_empty() {
            let re = Regex::new(&format!("^(?:{})$", r.key_regex))
                .map_err(|e| ConfigError::new(format!("{path}.key_regex"), e.to_string()))?;
            (None, Some(re))
        } else if !r.key.is_empty() {
            (Some(r.key.clone()), None)
        } else {
            return Err(ConfigError::new(path, "`key` or `key_regex` is required"));
        };
        let name = match (&key, r.tag_name.is_empty()) {
            (Some(k), true) => format!("k8s.{noun}.{kind}.{k}"),
            _ => r.tag_name.clone(),
        };
        out.push(FieldRule {
            name_has_refs: key_regex.is_some() && r.tag_name.contains('$'),
            name,
            key,
            key_regex,
            from,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::component::parse_config;

    fn compile(v: serde_json::Value) -> Result<Compiled, ConfigError> {
        parse_config::<K8sAttributesConfig>(&v)?.compile()
    }

    #[test]
    fn defaults_are_the_collectors() {
        let c = compile(serde_json::Value::Null).unwrap();
        assert_eq!(c.auth_type, AuthType::ServiceAccount);
        assert!(!c.passthrough && !c.wait_for_metadata);
        assert_eq!(c.wait_for_metadata_timeout, Duration::from_secs(10));
        let r = &c.rules;
        assert!(
            r.namespace
                && r.pod_name
                && r.pod_uid
                && r.start_time
                && r.deployment_name
                && r.node_name
                && r.container_image_name
                && r.container_image_tag
        );
        assert!(!r.pod_ip && !r.container_id && !r.node_uid);
        assert!(r.watch_replicasets() && !r.watch_namespaces() && !r.watch_nodes());
        let excluded: Vec<&str> = c.exclude.iter().map(|r| r.as_str()).collect();
        assert_eq!(excluded, ["jaeger-agent", "jaeger-collector"]);
        assert!(c.associations.is_empty());
    }

    #[test]
    fn selectors_come_from_filters() {
        let c = compile(serde_json::json!({
            "filter": {
                "node_from_env_var": "KUBE_NODE_NAME",
                "fields": [{"key": "metadata.name", "value": "a", "op": "not-equals"}],
                "labels": [{"key": "app", "value": "web"}, {"key": "tier", "op": "exists"}]
            }
        }))
        .unwrap();
        assert_eq!(c.node_from_env_var.as_deref(), Some("KUBE_NODE_NAME"));
        assert_eq!(
            c.field_selector(Some("n1")).as_deref(),
            Some("metadata.name!=a,spec.nodeName=n1")
        );
        assert_eq!(c.label_selector().as_deref(), Some("app=web,tier"));
    }

    #[test]
    fn bad_configs_are_refused_with_the_path() {
        for (v, path, needle) in [
            (
                serde_json::json!({"extract": {"metadata": ["k8s.pod.nam"]}}),
                "extract.metadata[0]",
                "not a supported",
            ),
            (
                serde_json::json!({"extract": {"labels": [{"key": "a", "key_regex": "b"}]}}),
                "extract.labels[0]",
                "only one option",
            ),
            (
                serde_json::json!({"extract": {"labels": [{"key": "a", "from": "deployment"}]}}),
                "extract.labels[0].from",
                "not supported",
            ),
            (
                serde_json::json!({"extract": {"annotations": [{"key_regex": "("}]}}),
                "extract.annotations[0].key_regex",
                "",
            ),
            (
                serde_json::json!({"pod_association": [{"sources": [{"from": "ip"}]}]}),
                "pod_association[0].sources[0].from",
                "connection",
            ),
            (
                serde_json::json!({"pod_association": [{"sources": [{"from": "resource_attribute"}]}]}),
                "pod_association[0].sources[0].name",
                "name",
            ),
            (
                serde_json::json!({"pod_association": [{"sources": [
                {"from": "connection"}, {"from": "connection"}, {"from": "connection"},
                {"from": "connection"}, {"from": "connection"}]}]}),
                "pod_association[0].sources",
                "at most 4",
            ),
            (
                serde_json::json!({"filter": {"fields": [{"key": "a", "op": "exists"}]}}),
                "filter.fields[0].op",
                "don't support",
            ),
            (
                serde_json::json!({"auth_type": "tls"}),
                "auth_type",
                "not supported",
            ),
            (
                serde_json::json!({"wait_for_metadataa": true}),
                "wait_for_metadataa",
                "unknown field",
            ),
        ] {
            let e = compile(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.path, path, "{v}: {e}");
            assert!(e.message.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn field_rules_extract_like_the_collector() {
        let c = compile(serde_json::json!({"extract": {"labels": [
            {"key": "app"},
            {"tag_name": "team", "key": "owner"},
            {"tag_name": "l.$1", "key_regex": "x/(.*)"},
            {"key_regex": "y.*", "from": "namespace"}
        ]}}))
        .unwrap();
        let labels: std::collections::BTreeMap<String, String> = [
            ("app", "web"),
            ("owner", "core"),
            ("x/a", "1"),
            ("x/b", ""),
            ("xx/c", "2"),
            ("yes", "y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut out = Vec::new();
        for r in &c.rules.labels {
            r.extract(&labels, "labels", &mut out);
        }
        assert_eq!(
            out,
            [
                ("k8s.pod.labels.app", "web"),
                ("team", "core"),
                ("l.a", "1"),
                ("k8s.namespace.labels.yes", "y")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(c.rules.watch_namespaces());
    }
}
