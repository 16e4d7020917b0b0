//! The Collector's attribute actions (`internal/coreinternal/attraction`), shared by the
//! `attributes` and `resource` processors: the config of one action, its validation (the
//! Collector's rules, with the offending field named), and its compilation to the kernels of
//! [`crate::kernels::attributes`].
//!
//! Actions run in config order, each over the whole attribute table of a payload, which gives
//! the same result as the Collector running every action on one map before the next map:
//! maps are independent, and each map sees the actions in order.

use std::net::SocketAddr;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute;
use regex::Regex;
use serde::Deserialize;

use crate::component::ConfigError;
use crate::kernels::attributes::{
    self as k, AnyValues, ConvertTarget, KernelError, Scalar, SetMode, Values,
};
use crate::payload::ClientMetadata;

/// One entry of `actions:` (attributes processor) or `attributes:` (resource processor).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub pattern: String,
    #[serde(default)]
    pub from_attribute: String,
    #[serde(default)]
    pub from_context: String,
    #[serde(default)]
    pub converted_type: String,
    #[serde(default)]
    pub action: String,
}

/// `from_context` keys sluice serves: the peer address every payload carries
/// (`Payload::origin`), and `metadata.<key>`: the request's client metadata, kept by a
/// receiver with `include_metadata: true` (`Payload::metadata`). Authenticator data (`auth.*`)
/// is not kept (sluice has no authenticators).
const CLIENT_ADDRESS: &str = "client.address";
const METADATA_PREFIX: &str = "metadata.";

/// What `from_context` reads from a payload: its peer and its client metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext<'a> {
    pub origin: Option<SocketAddr>,
    pub metadata: Option<&'a ClientMetadata>,
}

impl<'a> RequestContext<'a> {
    pub fn of(payload: &'a crate::Payload) -> Self {
        RequestContext {
            origin: payload.origin,
            metadata: payload.metadata.as_deref(),
        }
    }
}

#[derive(Debug)]
enum Source {
    /// `value:`, as a one-row column built once.
    Value(Box<AnyValues>),
    /// `from_attribute:`.
    Attribute(String),
    /// `from_context: client.address`: the peer's IP address.
    ClientAddress,
    /// `from_context: metadata.<key>`: the request's values of `key` (several joined with `;`).
    Metadata(String),
}

#[derive(Debug)]
enum Action {
    Set {
        key: String,
        mode: SetMode,
        source: Source,
    },
    /// `delete` and `hash`: the key itself (even empty, as the Collector removes `""` too) and
    /// every key matching the pattern.
    Delete {
        key: String,
        pattern: Option<Regex>,
    },
    Hash {
        key: String,
        pattern: Option<Regex>,
    },
    Extract {
        key: String,
        pattern: Regex,
    },
    Convert {
        key: String,
        target: ConvertTarget,
    },
}

/// A validated, compiled list of actions.
#[derive(Debug)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// Validates and compiles `configs` as the Collector's `NewAttrProc` does. `list` is the
    /// config field holding them (`actions` or `attributes`), used in error paths.
    pub fn compile(configs: &[ActionConfig], list: &str) -> Result<Actions, ConfigError> {
        if configs.is_empty() {
            return Err(ConfigError::new(
                list,
                format!("missing required field \"{list}\": at least one action is needed"),
            ));
        }
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| compile_one(c).map_err(|e| e.within(&format!("{list}[{i}]"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Actions)
    }

    /// Runs every action, in order, on an attribute table whose parents are `num_parents` rows.
    /// `parents` (one entry per parent row) limits the actions to the parents an
    /// include/exclude matched; `context` is what `from_context` reads.
    pub fn apply(
        &self,
        mut attrs: RecordBatch,
        num_parents: usize,
        parents: Option<&BooleanArray>,
        context: RequestContext<'_>,
    ) -> Result<RecordBatch, KernelError> {
        let mut i = 0;
        while i < self.0.len() {
            // Consecutive `value:` actions of one mode (the detected resource of
            // `resourcedetection`, a list of `insert`s) are one rebuild of the table.
            if let Action::Set {
                mode,
                source: Source::Value(_),
                ..
            } = &self.0[i]
            {
                let sets: Vec<(&str, Values<'_>)> = self.0[i..]
                    .iter()
                    .map_while(|a| match a {
                        Action::Set {
                            key,
                            mode: m,
                            source: Source::Value(v),
                        } if m == mode => Some((key.as_str(), Values::Scalar(v))),
                        _ => None,
                    })
                    .collect();
                if sets.len() > 1 {
                    attrs = k::set_keys(&attrs, num_parents, parents, &sets, *mode)?;
                    i += sets.len();
                    continue;
                }
            }
            let action = &self.0[i];
            i += 1;
            attrs = match action {
                Action::Set { key, mode, source } => match source {
                    Source::Value(v) => {
                        k::set_key(&attrs, num_parents, parents, key, Values::Scalar(v), *mode)?
                    }
                    Source::Attribute(from) => {
                        let v = k::lookup(&attrs, num_parents, from)?;
                        k::set_key(
                            &attrs,
                            num_parents,
                            parents,
                            key,
                            Values::PerParent(&v),
                            *mode,
                        )?
                    }
                    Source::Metadata(name) => {
                        let values = context.metadata.map_or(&[][..], |m| m.get(name));
                        if values.is_empty() {
                            attrs
                        } else {
                            let v = AnyValues::scalar(&Scalar::Str(values.join(";")));
                            k::set_key(
                                &attrs,
                                num_parents,
                                parents,
                                key,
                                Values::Scalar(&v),
                                *mode,
                            )?
                        }
                    }
                    Source::ClientAddress => match context.origin {
                        Some(addr) => {
                            let v = AnyValues::scalar(&Scalar::Str(addr.ip().to_string()));
                            k::set_key(
                                &attrs,
                                num_parents,
                                parents,
                                key,
                                Values::Scalar(&v),
                                *mode,
                            )?
                        }
                        None => attrs,
                    },
                },
                Action::Delete { key, pattern } => {
                    let rows = key_rows(&attrs, key, pattern.as_ref(), parents)?;
                    k::delete_rows(&attrs, &rows)?
                }
                Action::Hash { key, pattern } => {
                    let rows = key_rows(&attrs, key, pattern.as_ref(), parents)?;
                    k::hash_rows(&attrs, &rows)?
                }
                Action::Extract { key, pattern } => {
                    let mut out = attrs.clone();
                    for (name, column) in k::extract(&attrs, num_parents, key, pattern)? {
                        let v = AnyValues::from_strings(column);
                        out = k::set_key(
                            &out,
                            num_parents,
                            parents,
                            &name,
                            Values::PerParent(&v),
                            SetMode::Upsert,
                        )?;
                    }
                    out
                }
                Action::Convert { key, target } => {
                    let rows = key_rows(&attrs, key, None, parents)?;
                    k::convert_rows(&attrs, &rows, *target)?
                }
            };
        }
        Ok(attrs)
    }
}

/// Rows whose key is `key` or matches `pattern`, of the selected parents.
fn key_rows(
    attrs: &RecordBatch,
    key: &str,
    pattern: Option<&Regex>,
    parents: Option<&BooleanArray>,
) -> Result<BooleanArray, KernelError> {
    let rows = k::key_mask(attrs, |k| {
        k == key || pattern.is_some_and(|p| p.is_match(k))
    });
    Ok(match parents {
        Some(p) => compute::and(&rows, &k::rows_of_parents(attrs, p)?)?,
        None => rows,
    })
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

fn compile_regex(pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(pattern).map_err(|e| err("pattern", format!("invalid pattern {pattern:?}: {e}")))
}

/// A config `value` as an attribute value (`pcommon.Value.FromRaw`).
pub fn scalar_from_config(v: &serde_json::Value) -> Result<Scalar, String> {
    use serde_json::Value as J;
    match v {
        J::String(s) => Ok(Scalar::Str(s.clone())),
        J::Bool(b) => Ok(Scalar::Bool(*b)),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Scalar::Int(i))
            } else if n.is_u64() {
                Err(format!("{n} does not fit a 64-bit signed integer"))
            } else {
                n.as_f64()
                    .map(Scalar::Double)
                    .ok_or_else(|| format!("{n} is not a number sluice can hold"))
            }
        }
        J::Array(_) | J::Object(_) => {
            Err("lists and maps as a value are not supported; use a string, number or bool".into())
        }
        J::Null => Err("null is not a value".into()),
    }
}

fn compile_one(c: &ActionConfig) -> Result<Action, ConfigError> {
    let action = c.action.to_lowercase();
    let sources = usize::from(c.value.is_some())
        + usize::from(!c.from_attribute.is_empty())
        + usize::from(!c.from_context.is_empty());
    let no_converted_type = || {
        if c.converted_type.is_empty() {
            Ok(())
        } else {
            Err(err(
                "converted_type",
                format!("action {action:?} does not use \"converted_type\""),
            ))
        }
    };
    match action.as_str() {
        "delete" | "hash" => {
            if c.key.is_empty() && c.pattern.is_empty() {
                return Err(err(
                    "key",
                    format!("action {action:?} needs at least one of \"key\" and \"pattern\""),
                ));
            }
            if sources > 0 {
                let field = if c.value.is_some() {
                    "value"
                } else if !c.from_attribute.is_empty() {
                    "from_attribute"
                } else {
                    "from_context"
                };
                return Err(err(
                    field,
                    format!(
                        "action {action:?} does not use a value source (\"value\", \"from_attribute\", \"from_context\")"
                    ),
                ));
            }
            no_converted_type()?;
            let pattern = (!c.pattern.is_empty())
                .then(|| compile_regex(&c.pattern))
                .transpose()?;
            let key = c.key.clone();
            Ok(if action == "delete" {
                Action::Delete { key, pattern }
            } else {
                Action::Hash { key, pattern }
            })
        }
        "insert" | "update" | "upsert" => {
            if c.key.is_empty() {
                return Err(err(
                    "key",
                    format!("missing required field \"key\" for action {action:?}"),
                ));
            }
            if sources == 0 {
                return Err(err(
                    "value",
                    format!(
                        "action {action:?} needs one of \"value\", \"from_attribute\" or \"from_context\""
                    ),
                ));
            }
            if sources > 1 {
                return Err(err(
                    "value",
                    "only one of \"value\", \"from_attribute\" and \"from_context\" may be set",
                ));
            }
            if !c.pattern.is_empty() {
                return Err(err(
                    "pattern",
                    format!("action {action:?} does not use \"pattern\""),
                ));
            }
            no_converted_type()?;
            let mode = match action.as_str() {
                "insert" => SetMode::Insert,
                "update" => SetMode::Update,
                _ => SetMode::Upsert,
            };
            let source = if let Some(v) = &c.value {
                Source::Value(Box::new(AnyValues::scalar(
                    &scalar_from_config(v).map_err(|m| err("value", m))?,
                )))
            } else if !c.from_attribute.is_empty() {
                Source::Attribute(c.from_attribute.clone())
            } else if c.from_context == CLIENT_ADDRESS {
                Source::ClientAddress
            } else if let Some(name) = c
                .from_context
                .strip_prefix(METADATA_PREFIX)
                .filter(|n| !n.is_empty())
            {
                Source::Metadata(name.to_string())
            } else {
                return Err(err(
                    "from_context",
                    format!(
                        "{:?} is not supported: sluice takes {CLIENT_ADDRESS:?} and \"metadata.<key>\" (with a receiver's include_metadata) from the request context; it has no authenticators (auth.*)",
                        c.from_context
                    ),
                ));
            };
            Ok(Action::Set {
                key: c.key.clone(),
                mode,
                source,
            })
        }
        "extract" => {
            if c.key.is_empty() {
                return Err(err(
                    "key",
                    "missing required field \"key\" for action \"extract\"",
                ));
            }
            if sources > 0 {
                return Err(err(
                    "value",
                    "action \"extract\" does not use a value source (\"value\", \"from_attribute\", \"from_context\")",
                ));
            }
            if c.pattern.is_empty() {
                return Err(err(
                    "pattern",
                    "missing required field \"pattern\" for action \"extract\"",
                ));
            }
            no_converted_type()?;
            let pattern = compile_regex(&c.pattern)?;
            if pattern.captures_len() <= 1 {
                return Err(err("pattern", "contains no named matcher groups"));
            }
            if pattern.capture_names().skip(1).any(|n| n.is_none()) {
                return Err(err(
                    "pattern",
                    "contains at least one unnamed matcher group",
                ));
            }
            Ok(Action::Extract {
                key: c.key.clone(),
                pattern,
            })
        }
        "convert" => {
            if c.key.is_empty() {
                return Err(err(
                    "key",
                    "missing required field \"key\" for action \"convert\"",
                ));
            }
            if sources > 0 || !c.pattern.is_empty() {
                return Err(err(
                    if c.pattern.is_empty() {
                        "value"
                    } else {
                        "pattern"
                    },
                    "action \"convert\" does not use value sources or \"pattern\"",
                ));
            }
            let target = match c.converted_type.as_str() {
                "string" => ConvertTarget::String,
                "int" => ConvertTarget::Int,
                "double" => ConvertTarget::Double,
                "" => {
                    return Err(err(
                        "converted_type",
                        "missing required field \"converted_type\" for action \"convert\"",
                    ));
                }
                other => {
                    return Err(err(
                        "converted_type",
                        format!("invalid value {other:?}: expected one of int, double, string"),
                    ));
                }
            };
            Ok(Action::Convert {
                key: c.key.clone(),
                target,
            })
        }
        "" => Err(err(
            "action",
            "missing required field \"action\": one of insert, update, upsert, delete, hash, extract, convert",
        )),
        other => Err(err(
            "action",
            format!(
                "unsupported action {other:?}: expected one of insert, update, upsert, delete, hash, extract, convert"
            ),
        )),
    }
}
