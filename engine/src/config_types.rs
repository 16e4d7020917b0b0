//! Config value types shared by components: Go-style durations (`200ms`, `5s`, `1m30s`), as
//! the Collector writes them, and the `host:port` endpoints servers listen on.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a Go duration: a sequence of `<number><unit>` with units `ns`, `us`/`µs`, `ms`, `s`,
/// `m`, `h` (`1m30s`, `1.5s`, `250ms`). A bare `0` is zero. An integer in YAML is taken as
/// nanoseconds, as Go's `time.Duration` does.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?}"
            ));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ns, us, ms, s, m, h)"
                ));
            }
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (ns, us, ms, s, m, h)"
                ));
            }
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Text(String),
    Nanos(u64),
}

/// `#[serde(deserialize_with = "deserialize_duration")]`
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Nanos(n) => Ok(Duration::from_nanos(n)),
    }
}

/// `#[serde(default, deserialize_with = "deserialize_opt_duration")]`
pub fn deserialize_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(d).map(Some)
}

/// Checks the `endpoint` a server listens on when the config loads, so that `sluice validate`
/// catches what would otherwise fail at start ("cannot listen on : invalid socket address"):
/// `host:port` or `[ipv6]:port` with a port from 0 to 65535; `:port` (Go's form) means every
/// interface.
pub fn check_listen_endpoint(endpoint: &str) -> Result<(), String> {
    let expected = "expected host:port, e.g. localhost:4317, or 0.0.0.0:4317 for every interface";
    if endpoint.trim().is_empty() {
        return Err(format!("the endpoint is empty; {expected}"));
    }
    if endpoint.contains('/') || endpoint.chars().any(char::is_whitespace) {
        return Err(format!("invalid endpoint {endpoint:?}: {expected}"));
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!(
            "invalid endpoint {endpoint:?}: no port; {expected}"
        ));
    };
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "invalid endpoint {endpoint:?}: an IPv6 address is written in brackets, [::1]:4317"
        ));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "invalid endpoint {endpoint:?}: the port {port:?} is not a number from 0 to 65535"
        ));
    }
    Ok(())
}

/// What to bind for a checked endpoint: Go's `:port` (every interface) as `0.0.0.0:port`;
/// anything else as written.
pub fn bind_address(endpoint: &str) -> Cow<'_, str> {
    match endpoint.strip_prefix(':') {
        Some(port) => Cow::Owned(format!("0.0.0.0:{port}")),
        None => Cow::Borrowed(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_endpoints_are_checked_before_start() {
        for ok in [
            "localhost:4317",
            "0.0.0.0:0",
            "[::1]:65535",
            ":8888",
            "otel.svc:4318",
        ] {
            assert_eq!(check_listen_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "the endpoint is empty"),
            ("   ", "the endpoint is empty"),
            ("localhost", "no port"),
            (
                "localhost:99999",
                "the port \"99999\" is not a number from 0 to 65535",
            ),
            ("localhost:", "the port \"\" is not a number"),
            ("localhost:http", "the port \"http\" is not a number"),
            ("http://localhost:4318", "expected host:port"),
            ("::1:4317", "in brackets"),
        ] {
            let e = check_listen_endpoint(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(bind_address(":8888"), "0.0.0.0:8888");
        assert_eq!(bind_address("localhost:8888"), "localhost:8888");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }
}
