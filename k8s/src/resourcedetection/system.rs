//! The `system` detector, as the Collector's `internal/system` (and the libraries it uses:
//! `go-fqdn` for `dns`, the OpenTelemetry Go SDK for `host.id` and `os.description`):
//!
//! - `host.name` from the first `hostname_sources` entry that answers (default `[dns, os]`):
//!   - `os`: the kernel's hostname (`/proc/sys/kernel/hostname`, as Go's `os.Hostname`);
//!   - `dns`: the FQDN, as `go-fqdn` finds it: the hosts file line naming the hostname (its
//!     canonical name), else the resolver's canonical name, else a reverse lookup of the
//!     hostname's addresses;
//!   - `cname`: the resolver's canonical name for the hostname;
//!   - `lookup`: a reverse lookup of the hostname's addresses (first name that answers).
//!
//!   Resolver calls run on the blocking pool and are abandoned at the detection deadline.
//! - `os.type` from the build target (`linux`, `darwin`, `windows`, ...);
//! - off by default: `host.id` (`/etc/machine-id`, else `/var/lib/dbus/machine-id`),
//!   `host.arch` (`amd64`, `arm64`, ...), `os.description` (`NAME VERSION (uname)` from
//!   `/etc/os-release` and the kernel, as the Go SDK writes it).
//!
//! A value the detector cannot read while that attribute is enabled is an error (retried until
//! `timeout`), as in the Collector; when every hostname source fails, too.

use std::net::IpAddr;

use tokio::time::Instant;

use super::DetectedResource;
use super::config::{Enabled, HostnameSource};
use super::detect::{DetectError, HostEnvironment, SEMCONV_SCHEMA_URL, by_deadline};

pub struct SystemDetector {
    pub hostname_sources: Vec<HostnameSource>,
    pub attributes: Enabled,
}

impl SystemDetector {
    pub async fn detect(
        &self,
        host: &HostEnvironment,
        deadline: Instant,
    ) -> Result<DetectedResource, DetectError> {
        let on = |name| self.attributes.on(name);
        let host_id = on("host.id").then(|| machine_id(host)).transpose()?;
        let os_description = on("os.description")
            .then(|| os_description(host))
            .transpose()?;
        let mut failures = Vec::new();
        for &source in &self.hostname_sources {
            let name = match hostname_from(source, host, deadline).await {
                Ok(name) => name,
                Err(e) => {
                    tracing::debug!(detector = "system", source = source.name(), error = %e, "hostname source failed");
                    failures.push(format!("{}: {e}", source.name()));
                    continue;
                }
            };
            let values = [
                ("host.name", Some(name)),
                ("os.type", Some(os_type().to_string())),
                ("host.id", host_id),
                ("host.arch", Some(host_arch().to_string())),
                ("os.description", os_description),
            ];
            return Ok(DetectedResource {
                attributes: self
                    .attributes
                    .pick(values.into_iter().filter_map(|(k, v)| Some((k, v?)))),
                schema_url: SEMCONV_SCHEMA_URL.to_string(),
            });
        }
        Err(DetectError::Io(format!(
            "all hostname sources failed to get hostname ({})",
            failures.join("; ")
        )))
    }
}

async fn hostname_from(
    source: HostnameSource,
    host: &HostEnvironment,
    deadline: Instant,
) -> Result<String, DetectError> {
    let name = kernel_hostname(host)?;
    match source {
        HostnameSource::Os => Ok(name),
        HostnameSource::Dns => {
            if let Some(fqdn) = from_hosts_file(host, &name)? {
                return Ok(fqdn);
            }
            match canonical_name(host, &name, deadline).await {
                Ok(c) => Ok(c),
                Err(_) => reverse_lookup(host, &name, deadline).await,
            }
        }
        HostnameSource::Cname => canonical_name(host, &name, deadline).await,
        HostnameSource::Lookup => reverse_lookup(host, &name, deadline).await,
    }
}

/// The kernel's hostname, as Go's `os.Hostname` reads it on Linux.
fn kernel_hostname(host: &HostEnvironment) -> Result<String, DetectError> {
    let path = host.path("/proc/sys/kernel/hostname");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        // No /proc (not Linux, or not mounted): ask the C library, on the real machine.
        _ if host.uses_system_resolver() => dns_lookup::get_hostname()
            .map_err(|e| DetectError::Io(format!("failed getting OS hostname: {e}"))),
        Ok(_) => Err(DetectError::Io(format!("{} is empty", path.display()))),
        Err(e) => Err(DetectError::Io(format!(
            "failed getting OS hostname: {}: {e}",
            path.display()
        ))),
    }
}

/// `go-fqdn`'s hosts file step: the canonical name (first name) of the first line whose
/// canonical name or an alias is `name`. `None` when no line names it.
fn from_hosts_file(host: &HostEnvironment, name: &str) -> Result<Option<String>, DetectError> {
    let path = host.path("/etc/hosts");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DetectError::Io(format!(
                "cannot open hosts file {}: {e}",
                path.display()
            )));
        }
    };
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| canonical_in_hosts_line(line, name)))
}

/// One hosts(5) line: `address canonical [aliases...]`, `#` to the end is a comment. A
/// canonical name that is not a valid hostname (musl's rule: at most 254 bytes of letters,
/// digits, `.`, `-` or non-ASCII) makes the line not match, as in `go-fqdn`.
pub fn canonical_in_hosts_line(line: &str, name: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("");
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let _address = fields.next()?;
    let canonical = fields.next()?;
    let valid = canonical.len() <= 254
        && canonical
            .chars()
            .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid {
        return None;
    }
    (canonical == name || fields.any(|alias| alias == name)).then(|| canonical.to_string())
}

/// The resolver's canonical name for `name` (`getaddrinfo` with `AI_CANONNAME`, what Go's
/// `net.LookupCNAME` asks the C library), without a trailing dot.
async fn canonical_name(
    host: &HostEnvironment,
    name: &str,
    deadline: Instant,
) -> Result<String, DetectError> {
    resolve(host, name, "canonical name", deadline, |name| {
        let hints = dns_lookup::AddrInfoHints {
            flags: libc::AI_CANONNAME,
            socktype: libc::SOCK_STREAM,
            ..Default::default()
        };
        let mut infos = dns_lookup::getaddrinfo(Some(name), None, Some(hints))
            .map_err(|e| DetectError::Unreachable(format!("{e:?}")))?;
        infos
            .find_map(|i| i.ok()?.canonname)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| DetectError::InvalidResponse("no canonical name".into()))
    })
    .await
}

/// The first name a reverse lookup gives for one of `name`'s addresses, without a trailing
/// dot.
async fn reverse_lookup(
    host: &HostEnvironment,
    name: &str,
    deadline: Instant,
) -> Result<String, DetectError> {
    resolve(host, name, "reverse lookup", deadline, |name| {
        let addrs: Vec<IpAddr> = dns_lookup::lookup_host(name)
            .map_err(|e| DetectError::Unreachable(format!("{e:?}")))?
            .collect();
        addrs
            .iter()
            .find_map(|ip| dns_lookup::lookup_addr(ip).ok())
            .ok_or_else(|| DetectError::Unreachable(format!("no name for any of {addrs:?}")))
    })
    .await
}

/// Runs a (blocking) resolver call for `name` on the blocking pool, abandoned at `deadline`;
/// the answer without a trailing dot. No resolver in this environment: an error.
async fn resolve(
    host: &HostEnvironment,
    name: &str,
    what: &str,
    deadline: Instant,
    call: impl FnOnce(&str) -> Result<String, DetectError> + Send + 'static,
) -> Result<String, DetectError> {
    if !host.uses_system_resolver() {
        return Err(DetectError::Unsupported(
            "no resolver in this environment".into(),
        ));
    }
    let owned = name.to_string();
    let lookup = async move {
        tokio::task::spawn_blocking(move || call(&owned))
            .await
            .map_err(|e| DetectError::Io(format!("resolver task: {e}")))?
            .map(|n| n.trim_end_matches('.').to_string())
    };
    by_deadline(deadline, &format!("{what} of {name:?}"), lookup).await
}

/// The Go SDK's host id on Linux: the machine id.
fn machine_id(host: &HostEnvironment) -> Result<String, DetectError> {
    let candidates = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(host.path(p)).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .ok_or_else(|| {
            DetectError::Io(format!(
                "failed getting host ID: none of {} is readable",
                candidates.join(", ")
            ))
        })
}

/// The Collector's `GOOSToOSType`, from the build target.
pub fn os_type() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "dragonfly" => "dragonflybsd",
        other => other,
    }
}

/// The Collector's `GOARCHtoHostArch`, from the build target.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// The Go SDK's `os.description` on Unix: `NAME VERSION (uname)` from os-release (or its
/// `PRETTY_NAME`), or the uname line alone.
fn os_description(host: &HostEnvironment) -> Result<String, DetectError> {
    let kernel = |f: &str| {
        let path = host.path(&format!("/proc/sys/kernel/{f}"));
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| {
                DetectError::Io(format!(
                    "failed getting OS description: {}: {e}",
                    path.display()
                ))
            })
    };
    let machine = match std::env::consts::ARCH {
        "x86" => "i686",
        other => other,
    };
    let uname = format!(
        "{} {} {} {} {machine}",
        kernel("ostype")?,
        kernel("hostname")?,
        kernel("osrelease")?,
        kernel("version")?
    );
    let release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(host.path(p)).ok())
        .map(|text| os_release_name(&text))
        .unwrap_or_default();
    Ok(if release.is_empty() {
        uname
    } else {
        format!("{release} ({uname})")
    })
}

/// `NAME VERSION` (or `VERSION_ID`), else `PRETTY_NAME`, of an os-release(5) file.
pub fn os_release_name(text: &str) -> String {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unquote(v.trim()))
            .unwrap_or_default()
    };
    let name = value("NAME");
    let version = Some(value("VERSION"))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| value("VERSION_ID"));
    if !name.is_empty() && !version.is_empty() {
        format!("{name} {version}")
    } else {
        value("PRETTY_NAME")
    }
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner.replace("\\\"", "\"").replace("\\\\", "\\");
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resourcedetection::config::{AttributeToggle, SYSTEM_ATTRIBUTES};

    fn machine(files: &[(&str, &str)]) -> (tempfile::TempDir, HostEnvironment) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let env = HostEnvironment::new(|_| None, dir.path());
        (dir, env)
    }

    fn enabled(extra: &[&str]) -> Enabled {
        let cfg = extra
            .iter()
            .map(|n| (n.to_string(), AttributeToggle { enabled: true }))
            .collect();
        Enabled::resolve(SYSTEM_ATTRIBUTES, &cfg).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    #[test]
    fn hosts_lines_as_go_fqdn_reads_them() {
        let cases = [
            (
                "10.0.0.7 node-7.ec2.internal node-7",
                "node-7",
                Some("node-7.ec2.internal"),
            ),
            ("10.0.0.7\tnode-7", "node-7", Some("node-7")),
            (
                "  10.0.0.7   a.example  b  node-7 # comment",
                "node-7",
                Some("a.example"),
            ),
            ("10.0.0.7 a.example # node-7", "node-7", None),
            ("# 10.0.0.7 node-7", "node-7", None),
            ("10.0.0.7", "node-7", None),
            ("10.0.0.7 bad_name node-7", "node-7", None),
            ("10.0.0.7 node-8", "node-7", None),
        ];
        for (line, name, want) in cases {
            assert_eq!(
                canonical_in_hosts_line(line, name).as_deref(),
                want,
                "{line:?}"
            );
        }
    }

    #[tokio::test]
    async fn hostname_sources_in_order() {
        let (_dir, host) = machine(&[
            ("/proc/sys/kernel/hostname", "ip-10-0-0-7\n"),
            (
                "/etc/hosts",
                "127.0.0.1 localhost\n10.0.0.7 ip-10-0-0-7.eu-west-1.compute.internal ip-10-0-0-7\n",
            ),
        ]);
        let detect = |sources: Vec<HostnameSource>| SystemDetector {
            hostname_sources: sources,
            attributes: enabled(&[]),
        };
        let got = detect(vec![HostnameSource::Dns, HostnameSource::Os])
            .detect(&host, soon())
            .await
            .unwrap();
        assert_eq!(
            got.attributes,
            vec![
                (
                    "host.name".to_string(),
                    "ip-10-0-0-7.eu-west-1.compute.internal".to_string()
                ),
                ("os.type".to_string(), os_type().to_string()),
            ]
        );
        assert_eq!(got.schema_url, SEMCONV_SCHEMA_URL);
        let got = detect(vec![HostnameSource::Os]).detect(&host, soon()).await;
        assert_eq!(got.unwrap().attributes[0].1, "ip-10-0-0-7");
        // Not in the hosts file and no resolver here: dns fails, os answers.
        let (_dir2, bare) = machine(&[("/proc/sys/kernel/hostname", "lonely\n")]);
        let got = detect(vec![HostnameSource::Dns, HostnameSource::Os])
            .detect(&bare, soon())
            .await;
        assert_eq!(got.unwrap().attributes[0].1, "lonely");
        let err = detect(vec![HostnameSource::Cname, HostnameSource::Lookup])
            .detect(&bare, soon())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("all hostname sources failed"),
            "{err}"
        );
        assert!(err.to_string().contains("cname"), "{err}");
    }

    #[tokio::test]
    async fn off_by_default_attributes_when_enabled() {
        let (_dir, host) = machine(&[
            ("/proc/sys/kernel/hostname", "n1"),
            ("/proc/sys/kernel/ostype", "Linux\n"),
            ("/proc/sys/kernel/osrelease", "6.1.0-13-amd64\n"),
            (
                "/proc/sys/kernel/version",
                "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1\n",
            ),
            ("/etc/machine-id", "4f1a0c2b9e3d4a5b8c7d6e5f4a3b2c1d\n"),
            (
                "/etc/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n",
            ),
        ]);
        let d = SystemDetector {
            hostname_sources: vec![HostnameSource::Os],
            attributes: enabled(&["host.id", "host.arch", "os.description"]),
        };
        let got = d.detect(&host, soon()).await.unwrap().attributes;
        let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("host.id"), Some("4f1a0c2b9e3d4a5b8c7d6e5f4a3b2c1d"));
        assert_eq!(get("host.arch"), Some(host_arch()));
        assert_eq!(
            get("os.description").map(str::to_string),
            Some(format!(
                "Debian GNU/Linux 12 (bookworm) (Linux n1 6.1.0-13-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 {})",
                std::env::consts::ARCH
            ))
        );
        // Enabled but unreadable: an error naming what is missing.
        let (_dir2, bare) = machine(&[("/proc/sys/kernel/hostname", "n1")]);
        let e = d.detect(&bare, soon()).await.unwrap_err();
        assert!(e.to_string().contains("machine-id"), "{e}");
    }

    #[test]
    fn os_release_names() {
        assert_eq!(
            os_release_name("NAME=Alpine\nVERSION_ID=3.20.1\n"),
            "Alpine 3.20.1"
        );
        assert_eq!(os_release_name("PRETTY_NAME='Distroless'\n"), "Distroless");
        assert_eq!(os_release_name(""), "");
    }

    /// The real resolver on `localhost`, which every Linux hosts file names.
    #[tokio::test]
    async fn resolver_sources_on_this_machine() {
        let (_dir, fake) = machine(&[("/proc/sys/kernel/hostname", "localhost")]);
        let host = fake.with_system_resolver();
        assert_eq!(
            canonical_name(&host, "localhost", soon()).await.unwrap(),
            "localhost"
        );
        let name = reverse_lookup(&host, "localhost", soon()).await.unwrap();
        assert!(
            name.starts_with("localhost") || name.contains("localhost"),
            "{name}"
        );
        let e = canonical_name(&host, "no-such-host.invalid", soon()).await;
        assert!(e.is_err());
    }
}
