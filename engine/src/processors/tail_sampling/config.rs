//! `tail_sampling` configuration: the Collector's field names and defaults
//! (`processor/tailsamplingprocessor/config.go`, `factory.go`), checked at load.

use std::time::Duration;

use serde::Deserialize;

use crate::component::ConfigError;
use crate::config_types::deserialize_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// Wait after the first span of a trace before deciding (default 30s).
    #[serde(
        default = "default_decision_wait",
        deserialize_with = "deserialize_duration"
    )]
    pub decision_wait: Duration,
    /// Undecided traces held at most; past it the oldest are decided early (default 50000).
    #[serde(default = "default_num_traces")]
    pub num_traces: u64,
    /// A sizing hint for the trace index.
    #[serde(default)]
    pub expected_new_traces_per_sec: u64,
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Decide as soon as a policy samples (later policies are not evaluated).
    #[serde(default)]
    pub sample_on_first_match: bool,
    /// On shutdown drop what is buffered (counted) instead of deciding on the partial traces.
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: bool,
    pub policies: Vec<PolicyConfig>,
}

fn default_decision_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_num_traces() -> u64 {
    50_000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Trace ids of kept traces remembered after their spans are released (LRU; 0 = off).
    #[serde(default)]
    pub sampled_cache_size: usize,
    /// Trace ids of dropped traces remembered (LRU; 0 = off).
    #[serde(default)]
    pub non_sampled_cache_size: usize,
}

/// One policy. As in the Collector, every type's block may be present; only the one named by
/// `type` is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub policy_type: String,
    #[serde(default)]
    pub latency: LatencyConfig,
    #[serde(default)]
    pub numeric_attribute: NumericAttributeConfig,
    #[serde(default)]
    pub probabilistic: ProbabilisticConfig,
    #[serde(default)]
    pub status_code: StatusCodeConfig,
    #[serde(default)]
    pub string_attribute: StringAttributeConfig,
    #[serde(default)]
    pub rate_limiting: RateLimitingConfig,
    #[serde(default)]
    pub span_count: SpanCountConfig,
    #[serde(default)]
    pub boolean_attribute: BooleanAttributeConfig,
    #[serde(default)]
    pub ottl_condition: Option<OttlConditionConfig>,
    #[serde(default)]
    pub and: AndConfig,
    #[serde(default)]
    pub drop: DropConfig,
    #[serde(default)]
    pub composite: CompositeConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    #[serde(default)]
    pub threshold_ms: i64,
    /// 0 = no upper bound.
    #[serde(default)]
    pub upper_threshold_ms: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    #[serde(default)]
    pub key: String,
    /// 0 = no lower bound (the Collector treats 0 as unset).
    #[serde(default)]
    pub min_value: i64,
    /// 0 = no upper bound (the Collector treats 0 as unset).
    #[serde(default)]
    pub max_value: i64,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Salt of the trace id hash; empty = the Collector's `default-hash-seed`.
    #[serde(default)]
    pub hash_salt: String,
    #[serde(default)]
    pub sampling_percentage: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    #[serde(default)]
    pub status_codes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// The Collector's regex-result cache size; accepted without effect (warned: values are
    /// matched once per attribute row in a columnar pass).
    #[serde(default)]
    pub cache_max_size: usize,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    #[serde(default)]
    pub spans_per_second: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    #[serde(default)]
    pub min_spans: i32,
    /// 0 = no upper bound.
    #[serde(default)]
    pub max_spans: i32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: bool,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OttlConditionConfig {
    /// `ignore`, `silent` or `propagate` (default). A condition that fails on an item counts
    /// as false for it (`propagate` cannot fail a decision the way it fails a payload: the
    /// failure is counted in `sampling_policy_evaluation_error` instead).
    #[serde(default)]
    pub error_mode: Option<crate::ottl::ErrorMode>,
    /// Span conditions (ORed).
    #[serde(default)]
    pub span: Vec<String>,
    /// Span event conditions (ORed).
    #[serde(default)]
    pub spanevent: Vec<String>,
}

impl OttlConditionConfig {
    /// Compiles the span and span event conditions with sluice's OTTL compiler.
    pub fn compile(
        &self,
    ) -> Result<(Vec<crate::ottl::Condition>, Vec<crate::ottl::Condition>), ConfigError> {
        use crate::ottl::{Context, compile_condition};
        use crate::schema::Signal;
        if self.span.is_empty() && self.spanevent.is_empty() {
            return Err(ConfigError::new(
                "ottl_condition",
                "expected at least one span or spanevent condition",
            ));
        }
        let compile = |list: &[String], ctx: Context, field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, text)| {
                    compile_condition(text, Signal::Traces, Some(ctx)).map_err(|e| {
                        ConfigError::new(format!("ottl_condition.{field}[{i}]"), e.render())
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok((
            compile(&self.span, Context::Span, "span")?,
            compile(&self.spanevent, Context::SpanEvent, "spanevent")?,
        ))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    #[serde(default)]
    pub and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    #[serde(default)]
    pub drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    #[serde(default)]
    pub max_total_spans_per_second: i64,
    /// Accepted for compatibility; as in the Collector, sub-policies are evaluated in the order
    /// of `composite_sub_policy`.
    #[serde(default)]
    pub policy_order: Vec<String>,
    #[serde(default)]
    pub composite_sub_policy: Vec<PolicyConfig>,
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocationConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocationConfig {
    pub policy: String,
    #[serde(default)]
    pub percent: i64,
}

/// Where a policy sits, which decides the types it may have (the Collector's `PolicyCfg`,
/// `AndSubPolicyCfg`, `CompositeSubPolicyCfg`, `DropSubPolicyCfg`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Level {
    Top,
    AndSub,
    DropSub,
    CompositeSub,
}

/// Policy types sluice evaluates.
pub const SUPPORTED_TYPES: [&str; 13] = [
    "always_sample",
    "latency",
    "numeric_attribute",
    "probabilistic",
    "status_code",
    "string_attribute",
    "rate_limiting",
    "span_count",
    "boolean_attribute",
    "ottl_condition",
    "and",
    "drop",
    "composite",
];

/// Collector policy types sluice does not have yet: refused with a clear message, never ignored.
const NOT_YET: [&str; 6] = [
    "trace_state",
    "trace_flags",
    "bytes_limiting",
    "rare_spans",
    "skip",
    "not",
];

impl TailSamplingConfig {
    /// Checks what serde cannot: policy names and types, required fields, value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.policies.is_empty() {
            return Err(ConfigError::new(
                "policies",
                "at least one policy is required",
            ));
        }
        if self.decision_wait.is_zero() {
            return Err(ConfigError::new("decision_wait", "must be greater than 0"));
        }
        if self.num_traces == 0 {
            return Err(ConfigError::new("num_traces", "must be greater than 0"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let path = format!("policies[{i}]");
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    format!("duplicate policy name {:?}", p.name),
                ));
            }
            p.validate(Level::Top).map_err(|e| e.within(&path))?;
        }
        Ok(())
    }
}

impl PolicyConfig {
    pub fn validate(&self, level: Level) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "policy name cannot be empty"));
        }
        let t = self.policy_type.as_str();
        if NOT_YET.contains(&t) {
            return Err(ConfigError::new(
                "type",
                format!(
                    "policy type {t:?} is not supported by sluice yet; supported: {}",
                    SUPPORTED_TYPES.join(", ")
                ),
            ));
        }
        if !SUPPORTED_TYPES.contains(&t) {
            return Err(ConfigError::new(
                "type",
                format!(
                    "unknown policy type {t:?}; supported: {}",
                    SUPPORTED_TYPES.join(", ")
                ),
            ));
        }
        let nested_ok = match t {
            "and" => matches!(level, Level::Top | Level::CompositeSub),
            "drop" | "composite" => level == Level::Top,
            _ => true,
        };
        if !nested_ok {
            return Err(ConfigError::new(
                "type",
                format!("a {t:?} policy cannot be nested here"),
            ));
        }
        match t {
            "status_code" => {
                if self.status_code.status_codes.is_empty() {
                    return Err(ConfigError::new(
                        "status_code.status_codes",
                        "expected at least one status code to filter on",
                    ));
                }
                for (i, c) in self.status_code.status_codes.iter().enumerate() {
                    if !matches!(c.as_str(), "OK" | "ERROR" | "UNSET") {
                        return Err(ConfigError::new(
                            format!("status_code.status_codes[{i}]"),
                            format!("unknown status code {c:?}, supported: OK, ERROR, UNSET"),
                        ));
                    }
                }
            }
            "numeric_attribute" => {
                let n = &self.numeric_attribute;
                if n.min_value == 0 && n.max_value == 0 {
                    return Err(ConfigError::new(
                        "numeric_attribute",
                        "at least one of min_value or max_value must be set (non-zero)",
                    ));
                }
            }
            "string_attribute" if self.string_attribute.enabled_regex_matching => {
                for (i, v) in self.string_attribute.values.iter().enumerate() {
                    if let Err(e) = regex::Regex::new(v) {
                        return Err(ConfigError::new(
                            format!("string_attribute.values[{i}]"),
                            format!("invalid regular expression: {e}"),
                        ));
                    }
                }
            }
            "probabilistic" => {
                let p = self.probabilistic.sampling_percentage;
                if !(p.is_finite() && p >= 0.0) {
                    return Err(ConfigError::new(
                        "probabilistic.sampling_percentage",
                        "must be a number >= 0 (>= 100 keeps every trace)",
                    ));
                }
            }
            "rate_limiting" if self.rate_limiting.spans_per_second < 0 => {
                return Err(ConfigError::new(
                    "rate_limiting.spans_per_second",
                    "must be >= 0",
                ));
            }
            "ottl_condition" => {
                let Some(o) = &self.ottl_condition else {
                    return Err(ConfigError::new(
                        "ottl_condition",
                        "expected at least one span or spanevent condition",
                    ));
                };
                o.compile()?;
            }
            "and" => sub_policies(
                &self.and.and_sub_policy,
                "and.and_sub_policy",
                Level::AndSub,
            )?,
            "drop" => sub_policies(
                &self.drop.drop_sub_policy,
                "drop.drop_sub_policy",
                Level::DropSub,
            )?,
            "composite" => {
                let c = &self.composite;
                sub_policies(
                    &c.composite_sub_policy,
                    "composite.composite_sub_policy",
                    Level::CompositeSub,
                )?;
                for (i, r) in c.rate_allocation.iter().enumerate() {
                    if !c.composite_sub_policy.iter().any(|s| s.name == r.policy) {
                        return Err(ConfigError::new(
                            format!("composite.rate_allocation[{i}].policy"),
                            format!("{:?} is not a composite_sub_policy name", r.policy),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn sub_policies(subs: &[PolicyConfig], path: &str, level: Level) -> Result<(), ConfigError> {
    if subs.is_empty() {
        return Err(ConfigError::new(
            path,
            "at least one sub-policy is required",
        ));
    }
    for (i, s) in subs.iter().enumerate() {
        s.validate(level)
            .map_err(|e| e.within(&format!("{path}[{i}]")))?;
    }
    Ok(())
}
