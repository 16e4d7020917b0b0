//! The `env` detector: `OTEL_RESOURCE_ATTRIBUTES` (or the deprecated `OTEL_RESOURCE` when that
//! is unset or blank), parsed exactly as the Collector's `internal/env` does.
//!
//! The text is a list of `key=value` pairs separated by commas, spaces around keys and values
//! ignored, keys of 1 to 256 and values of 0 to 256 ASCII characters, values URL-unescaped as
//! Go's `url.QueryUnescape` does (`%XX`, and `+` is a space). Anything else anywhere in the
//! text (a pair without `=`, non-ASCII text, a bad `%` escape) is an error and the detector
//! yields nothing, not the pairs before it. One difference: Go keeps the bytes an escape
//! decodes to even when they are not UTF-8; sluice's attribute values are UTF-8, so such a
//! value is an error too.

use std::sync::LazyLock;

use regex::Regex;

use super::DetectedResource;
use super::config::EnvAttributes;
use super::detect::{DetectError, HostEnvironment};

const ENV_VAR: &str = "OTEL_RESOURCE_ATTRIBUTES";
const DEPRECATED_ENV_VAR: &str = "OTEL_RESOURCE";

/// The Collector's `labelRegex`, with Go's `\s` spelled out (Go's `\s` is `[\t\n\f\r ]`; the
/// Rust crate's would also take `\v` and Unicode spaces). Lazy quantifiers with leftmost-first
/// matching behave as in Go's RE2.
static PAIR: LazyLock<Regex> = LazyLock::new(|| {
    let ws = r"[\t\n\f\r ]*";
    Regex::new(&format!(
        r"{ws}([[:ascii:]]{{1,256}}?){ws}={ws}([[:ascii:]]{{0,256}}?){ws}(?:,|$)"
    ))
    .expect("a valid constant pattern")
});

/// Parses `OTEL_RESOURCE_ATTRIBUTES` text into pairs, in order (a repeated key: the last one
/// wins, as `pcommon.Map.PutStr` replaces).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut prev_end = 0;
    let mut any = false;
    for caps in PAIR.captures_iter(text) {
        any = true;
        let (Some(whole), Some(key), Some(value)) = (caps.get(0), caps.get(1), caps.get(2)) else {
            continue; // every match has both groups
        };
        if whole.start() != prev_end {
            return Err(format!(
                "invalid resource format, invalid text: {:?}",
                &text[prev_end..whole.start()]
            ));
        }
        let value = query_unescape(value.as_str()).map_err(|e| {
            format!(
                "invalid resource format in attribute: {:?}, err: {e}",
                whole.as_str()
            )
        })?;
        match out.iter_mut().find(|(k, _)| k == key.as_str()) {
            Some(slot) => slot.1 = value,
            None => out.push((key.as_str().to_string(), value)),
        }
        prev_end = whole.end();
    }
    if !any {
        return Err(format!("invalid resource format: {text:?}"));
    }
    if prev_end != text.len() {
        return Err(format!(
            "invalid resource format, invalid text: {:?}",
            &text[prev_end..]
        ));
    }
    Ok(out)
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a `%` not followed by two hex
/// digits is an error. The bytes must form UTF-8 (see the module doc).
pub fn query_unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let digit = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
                    let end = (i + 3).min(bytes.len());
                    return Err(format!(
                        "invalid URL escape {:?}",
                        String::from_utf8_lossy(&bytes[i..end])
                    ));
                };
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the unescaped value is not UTF-8".to_string())
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob_match(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty(); // no `*`: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// `included` (empty: every key) minus `excluded`.
fn keep(filter: &EnvAttributes, key: &str) -> bool {
    (filter.included.is_empty() || filter.included.iter().any(|p| glob_match(p, key)))
        && !filter.excluded.iter().any(|p| glob_match(p, key))
}

pub struct EnvDetector {
    pub filter: EnvAttributes,
}

impl EnvDetector {
    pub fn detect(&self, host: &HostEnvironment) -> Result<DetectedResource, DetectError> {
        let text = [ENV_VAR, DEPRECATED_ENV_VAR]
            .iter()
            .filter_map(|v| host.var(v))
            .map(|t| t.trim().to_string())
            .find(|t| !t.is_empty());
        let Some(text) = text else {
            return Ok(DetectedResource::default());
        };
        let pairs =
            parse(&text).map_err(|e| DetectError::InvalidInput(format!("{ENV_VAR}: {e}")))?;
        Ok(DetectedResource {
            attributes: pairs
                .into_iter()
                .filter(|(k, _)| keep(&self.filter, k))
                .collect(),
            schema_url: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The Collector's `env_test.go` cases, and the edges of its regular expression.
    #[test]
    fn parses_as_the_collector() {
        let ok: Vec<(&str, Vec<(String, String)>)> = vec![
            ("key=value", pairs(&[("key", "value")])),
            (
                "key1 = value1, key2=value2 ,key3=value3",
                pairs(&[("key1", "value1"), ("key2", "value2"), ("key3", "value3")]),
            ),
            ("k=", pairs(&[("k", "")])),
            ("a=b=c", pairs(&[("a", "b=c")])),
            ("k=v,", pairs(&[("k", "v")])),
            (
                "host.name=node%201,team=a+b,pct=100%25",
                pairs(&[("host.name", "node 1"), ("team", "a b"), ("pct", "100%")]),
            ),
            ("k=%C3%A9t%C3%A9", pairs(&[("k", "été")])),
            ("k=v1,k=v2", pairs(&[("k", "v2")])),
            (
                "cloud.region=eu-west-1,\tzone = eu-west-1a",
                pairs(&[("cloud.region", "eu-west-1"), ("zone", "eu-west-1a")]),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
        let bad = [
            ("", "invalid resource format"),
            ("novalue", "invalid resource format"),
            ("k=v,novalue", "invalid text: \"novalue\""),
            ("k=%zz", "invalid URL escape"),
            ("k=%4", "invalid URL escape"),
            ("k=v,été=x", "invalid text"),
            ("k=%FF", "not UTF-8"),
        ];
        for (text, want) in bad {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A key of 257 characters does not fit the pattern; 256 does.
        let long = "k".repeat(256);
        assert_eq!(parse(&format!("{long}=v")), Ok(pairs(&[(&long, "v")])));
        assert!(parse(&format!("{long}k=v")).is_err());
    }

    #[test]
    fn globs_filter_keys() {
        let f = EnvAttributes {
            included: vec!["service.*".into(), "host.name".into()],
            excluded: vec!["*.version".into()],
        };
        for (key, want) in [
            ("service.name", true),
            ("service.version", false),
            ("host.name", true),
            ("host.id", false),
            ("service.", true),
        ] {
            assert_eq!(keep(&f, key), want, "{key}");
        }
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(glob_match("a**", "a"));
        assert!(!glob_match("ab", "abc"));
    }

    #[test]
    fn the_deprecated_variable_is_read_when_the_current_one_is_blank() {
        let d = EnvDetector {
            filter: EnvAttributes::default(),
        };
        let host = HostEnvironment::for_tests(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "  "),
            ("OTEL_RESOURCE", "a=1"),
        ]);
        assert_eq!(d.detect(&host).unwrap().attributes, pairs(&[("a", "1")]));
        let host = HostEnvironment::for_tests(&[("OTEL_RESOURCE_ATTRIBUTES", "a=1,oops")]);
        let e = d.detect(&host).unwrap_err();
        assert!(
            matches!(&e, DetectError::InvalidInput(m) if m.contains("oops")),
            "{e}"
        );
        assert!(
            d.detect(&HostEnvironment::for_tests(&[]))
                .unwrap()
                .attributes
                .is_empty()
        );
    }

    fn percent_encode(v: &str) -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest! {
        /// What an SDK writes (`k=escaped(v)` joined by commas) reads back as written.
        #[test]
        fn written_pairs_read_back(
            items in proptest::collection::btree_map("[a-z][a-z0-9._/-]{0,30}", "\\PC{0,20}", 1..8),
            spaced in any::<bool>(),
        ) {
            let sep = if spaced { " , " } else { "," };
            let text = items
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect::<Vec<_>>()
                .join(sep);
            // Values longer than 256 characters once escaped do not fit the pattern.
            prop_assume!(items.values().all(|v| percent_encode(v).len() <= 256));
            let want: Vec<(String, String)> =
                items.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(parse(&text), Ok(want));
        }

        /// Anything at all: an answer, never a panic; an accepted text's pairs have keys.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}|[ -~]{0,80}") {
            if let Ok(pairs) = parse(&text) {
                prop_assert!(pairs.iter().all(|(k, _)| !k.is_empty()));
            }
        }
    }
}
