//! The kubelet's Summary API (`GET /stats/summary`, `k8s.io/kubelet/pkg/apis/stats/v1alpha1`),
//! the part of it the receiver reads, as structs that borrow the response body: names come out
//! as `Cow::Borrowed` (owned only when the JSON escapes a character), numbers as `Option`
//! (absent or `null` means "no point", never zero). Fields the receiver does not use
//! (`systemContainers`, `runtime`, `rlimit`, `swap`, `logs`, ...) are skipped by serde without
//! being stored, and unknown fields are ignored, as Go's `encoding/json` does.

use std::borrow::Cow;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
pub struct Summary<'a> {
    #[serde(borrow, default)]
    pub node: NodeStats<'a>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub pods: Vec<PodStats<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats<'a> {
    #[serde(borrow, default, deserialize_with = "name")]
    pub node_name: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "time")]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    #[serde(borrow, default)]
    pub network: Option<NetworkStats<'a>>,
    #[serde(default)]
    pub fs: Option<FsStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats<'a> {
    #[serde(borrow, default)]
    pub pod_ref: PodReference<'a>,
    #[serde(default, deserialize_with = "time")]
    pub start_time: Option<u64>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub containers: Vec<ContainerStats<'a>>,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    #[serde(borrow, default)]
    pub network: Option<NetworkStats<'a>>,
    #[serde(borrow, default, rename = "volume", deserialize_with = "null_as_empty")]
    pub volumes: Vec<VolumeStats<'a>>,
    #[serde(default, rename = "ephemeral-storage")]
    pub ephemeral_storage: Option<FsStats>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PodReference<'a> {
    #[serde(borrow, default, deserialize_with = "name")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "name")]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "name")]
    pub uid: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats<'a> {
    #[serde(borrow, default, deserialize_with = "name")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "time")]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
    #[serde(default)]
    pub rootfs: Option<FsStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub available_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    pub working_set_bytes: Option<u64>,
    #[serde(rename = "rssBytes")]
    pub rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
}

/// The default interface's counters (inlined in the JSON: `name`, `rxBytes`, ...) and every
/// interface's.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats<'a> {
    #[serde(borrow, default, deserialize_with = "name")]
    pub name: Option<Cow<'a, str>>,
    pub rx_bytes: Option<u64>,
    pub rx_errors: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_errors: Option<u64>,
    #[serde(borrow, default, deserialize_with = "null_as_empty")]
    pub interfaces: Vec<InterfaceStats<'a>>,
}

impl<'a> NetworkStats<'a> {
    /// The default interface, as one of the list's entries.
    pub fn default_interface(&self) -> InterfaceStats<'_> {
        InterfaceStats {
            name: self.name.as_deref().map(Cow::Borrowed),
            rx_bytes: self.rx_bytes,
            rx_errors: self.rx_errors,
            tx_bytes: self.tx_bytes,
            tx_errors: self.tx_errors,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats<'a> {
    #[serde(borrow, default, deserialize_with = "name")]
    pub name: Option<Cow<'a, str>>,
    pub rx_bytes: Option<u64>,
    pub rx_errors: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_errors: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub available_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub inodes_free: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_used: Option<u64>,
}

/// A volume: `FsStats` inlined, plus its name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats<'a> {
    #[serde(borrow, default, deserialize_with = "name")]
    pub name: Option<Cow<'a, str>>,
    pub available_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub inodes_free: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_used: Option<u64>,
}

/// Go decodes a JSON `null` list as an empty one.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A string that borrows the body: serde's own `Cow<str>` always copies, so strings are
/// visited here and only escaped ones (rare in names) are copied.
fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    struct Nullable;
    impl<'de> Visitor<'de> for Nullable {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Text).map(Some)
        }
    }
    d.deserialize_option(Nullable)
}

/// An RFC 3339 time (`metav1.Time`) as Unix nanoseconds; `null` is absent. A time before
/// 1970 has no `u64` nanoseconds: it is absent too (start time 0, as an unknown one).
fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = name(d)? else {
        return Ok(None);
    };
    let ts: jiff::Timestamp = text.parse().map_err(|e| {
        serde::de::Error::custom(format_args!("invalid RFC 3339 time {text:?}: {e}"))
    })?;
    Ok(u64::try_from(ts.as_nanosecond()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_borrowed_unless_escaped() {
        let body = br#"{"node":{"nodeName":"n\u00e9"},"pods":[{"podRef":{"name":"p","namespace":"ns","uid":"u"}}]}"#;
        let s: Summary<'_> = serde_json::from_slice(body).unwrap();
        assert!(matches!(s.node.node_name, Some(Cow::Owned(ref n)) if n == "né"));
        assert!(matches!(s.pods[0].pod_ref.name, Some(Cow::Borrowed("p"))));
    }

    #[test]
    fn times_are_rfc3339() {
        let body = br#"{"node":{"startTime":"2020-04-20T22:38:53Z"},"pods":[{"startTime":"2020-04-20T22:38:53.5+02:00"},{"startTime":null}]}"#;
        let s: Summary<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(s.node.start_time, Some(1_587_422_333_000_000_000));
        assert_eq!(s.pods[0].start_time, Some(1_587_415_133_500_000_000));
        assert_eq!(s.pods[1].start_time, None);
        let bad = br#"{"node":{"startTime":"yesterday"}}"#;
        let e = serde_json::from_slice::<Summary<'_>>(bad).unwrap_err();
        assert!(e.to_string().contains("invalid RFC 3339 time"), "{e}");
    }

    #[test]
    fn nulls_and_missing_fields_are_absent_not_zero() {
        let body = br#"{"node":{"cpu":{"usageNanoCores":null},"network":{"name":"eth0","rxBytes":5}},"pods":null}"#;
        let s: Summary<'_> = serde_json::from_slice(body).unwrap();
        let cpu = s.node.cpu.unwrap();
        assert_eq!(
            (cpu.usage_nano_cores, cpu.usage_core_nano_seconds),
            (None, None)
        );
        let net = s.node.network.unwrap();
        assert_eq!(net.default_interface().rx_bytes, Some(5));
        assert_eq!(net.tx_bytes, None);
        assert!(s.pods.is_empty());
    }

    #[test]
    fn wrong_types_are_errors() {
        for body in [
            &br#"{"node":{"cpu":{"usageNanoCores":-1}}}"#[..],
            br#"{"node":{"cpu":{"usageNanoCores":1.5}}}"#,
            br#"{"pods":[{"podRef":{"name":7}}]}"#,
            br#"{"node":"#,
        ] {
            assert!(serde_json::from_slice::<Summary<'_>>(body).is_err());
        }
    }
}
