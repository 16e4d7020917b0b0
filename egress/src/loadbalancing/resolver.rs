//! Resolvers: where the `loadbalancing` exporter's backends come from.
//!
//! A resolver is a task that publishes endpoint sets ([`Publisher::publish`]): the full list
//! each time, or an error (a failed lookup keeps the last good set, as in the Collector). The
//! publisher sorts and deduplicates, counts resolutions and updates in self-telemetry, and
//! passes a set on only when it changed. The exporter rebuilds its ring from what is passed on.
//! `static` publishes once, `dns` polls; a watch-based resolver (the `k8s` one, from the
//! cluster's EndpointSlices) publishes whenever its view changes: every resolver has this one
//! shape, [`Resolver::run`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver as HickoryResolver, TokioResolver};
use sluice_engine::component::BoxFuture;
use sluice_engine::telemetry::{Counter, Gauge, Telemetry};
use sluice_k8s::k8sattributes::watch::Environment;
use sluice_k8s::service_endpoints::{self, Backoff, ServiceEndpoints};
use tokio::sync::watch;

/// The environment variable that points the `dns` resolver at one nameserver (`ip:port`)
/// instead of the system's (`/etc/resolv.conf`). For tests, which run a DNS responder on
/// loopback; a deployment leaves it unset.
pub const NAMESERVER_ENV: &str = "SLUICE_DNS_NAMESERVER";

/// A source of backend sets.
pub trait Resolver: Send + Sync + 'static {
    /// The `resolver` label of self-telemetry: `static`, `dns`, `k8s`.
    fn kind(&self) -> &'static str;
    /// Resolves until the task is dropped, publishing every outcome.
    fn run(self: Arc<Self>, out: Publisher) -> BoxFuture<'static, ()>;
    /// How long the exporter's start waits for the first answer.
    fn first_answer_within(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// Where a resolver publishes: sorts, deduplicates, counts, and passes changes on.
pub struct Publisher {
    tx: watch::Sender<Option<Vec<String>>>,
    resolved_ok: Counter,
    resolved_failed: Counter,
    backends: Gauge,
    updates: Counter,
    exporter: String,
}

impl Publisher {
    pub fn new(
        telemetry: &Telemetry,
        exporter: &str,
        resolver: &'static str,
    ) -> (Publisher, watch::Receiver<Option<Vec<String>>>) {
        let (tx, rx) = watch::channel(None);
        let resolutions = |success: &str| {
            telemetry.counter(
                "otelcol_loadbalancer_num_resolutions",
                "Number of times the resolver has triggered new resolutions.",
                &[
                    ("exporter", exporter),
                    ("resolver", resolver),
                    ("success", success),
                ],
            )
        };
        let labels = [("exporter", exporter), ("resolver", resolver)];
        let p = Publisher {
            tx,
            resolved_ok: resolutions("true"),
            resolved_failed: resolutions("false"),
            backends: telemetry.gauge(
                "otelcol_loadbalancer_num_backends",
                "Current number of backends in use.",
                &labels,
            ),
            updates: telemetry.counter(
                "otelcol_loadbalancer_num_backend_updates",
                "Number of times the list of backends was updated.",
                &labels,
            ),
            exporter: exporter.to_string(),
        };
        (p, rx)
    }

    /// One resolution's outcome. A failure (or an empty answer, which the Collector's Go
    /// resolver also reports as an error) keeps the last good set.
    pub fn publish(&self, outcome: Result<Vec<String>, String>) {
        let mut endpoints = match outcome {
            Ok(e) if !e.is_empty() => e,
            Ok(_) => {
                self.resolved_failed.add(1);
                tracing::warn!(exporter = %self.exporter, "the resolver found no backends; keeping the last ones");
                return;
            }
            Err(e) => {
                self.resolved_failed.add(1);
                tracing::warn!(exporter = %self.exporter, error = %e, "failed to resolve backends; keeping the last ones");
                return;
            }
        };
        self.resolved_ok.add(1);
        endpoints.sort();
        endpoints.dedup();
        self.tx.send_if_modified(|current| {
            if current.as_ref() == Some(&endpoints) {
                return false;
            }
            self.backends.set(endpoints.len() as i64);
            self.updates.add(1);
            tracing::info!(exporter = %self.exporter, backends = ?endpoints, "backends changed");
            *current = Some(endpoints);
            true
        });
    }
}

/// `resolver.static`: the configured hostnames, once.
pub struct StaticResolver {
    pub hostnames: Vec<String>,
}

impl Resolver for StaticResolver {
    fn kind(&self) -> &'static str {
        "static"
    }
    fn run(self: Arc<Self>, out: Publisher) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            out.publish(Ok(self.hostnames.clone()));
            // Nothing changes: hold the channel open until the exporter stops.
            std::future::pending::<()>().await
        })
    }
}

/// `resolver.k8s`: the ready endpoints of a service, from a watch of its EndpointSlices
/// ([`sluice_k8s::service_endpoints`]), published after the first list and on every change.
/// The API is reached as the Collector does (`KUBECONFIG`, else the pod's service account,
/// else `~/.kube/config`); while it cannot be, each failure is a failed resolution and the
/// last backends stay.
pub struct K8sResolver {
    pub endpoints: ServiceEndpoints,
    /// How long the exporter's start waits for the first list.
    pub timeout: Duration,
    pub env: Environment,
    pub backoff: Backoff,
}

impl Resolver for K8sResolver {
    fn kind(&self) -> &'static str {
        "k8s"
    }
    fn first_answer_within(&self) -> Duration {
        self.timeout
    }
    fn run(self: Arc<Self>, out: Publisher) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut delay = self.backoff.min;
            let client = loop {
                match service_endpoints::client(&self.env).await {
                    Ok(c) => break c,
                    Err(e) => {
                        out.publish(Err(format!("cannot reach the Kubernetes API: {e}")));
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.backoff.max);
                    }
                }
            };
            let publish = |r| out.publish(r);
            self.endpoints.watch(client, &self.backoff, &publish).await;
        })
    }
}

/// `resolver.dns`: A and AAAA records of `hostname`, every `interval`, each lookup bounded by
/// `timeout`. IPv4 answers are written `ip`, IPv6 `[ip]`, followed by `:port` when a port is
/// configured (the Collector's strings, which its ring hashes).
pub struct DnsResolver {
    pub hostname: String,
    pub port: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    resolver: TokioResolver,
}

impl DnsResolver {
    /// The nameserver [`NAMESERVER_ENV`] names, if set.
    pub fn nameserver_from_env() -> Result<Option<SocketAddr>, String> {
        match std::env::var(NAMESERVER_ENV) {
            Ok(addr) => addr
                .parse()
                .map(Some)
                .map_err(|e| format!("{NAMESERVER_ENV}={addr:?} is not an ip:port address: {e}")),
            Err(_) => Ok(None),
        }
    }

    /// A resolver asking `nameserver`, or the system's nameservers (`/etc/resolv.conf`, with
    /// its search domains) when `None`. Answers are never cached (the Collector's Go resolver
    /// does not cache either: each lookup asks).
    pub fn new(
        hostname: String,
        port: Option<String>,
        interval: Duration,
        timeout: Duration,
        nameserver: Option<SocketAddr>,
    ) -> Result<DnsResolver, String> {
        let mut builder = match nameserver {
            Some(addr) => {
                let mut ns = NameServerConfig::udp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                HickoryResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.timeout = timeout;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(DnsResolver {
            hostname,
            port,
            interval,
            timeout,
            resolver,
        })
    }

    /// One lookup: the backend strings, or why not.
    pub async fn resolve(&self) -> Result<Vec<String>, String> {
        let lookup = tokio::time::timeout(
            self.timeout,
            self.resolver.lookup_ip(self.hostname.as_str()),
        )
        .await
        .map_err(|_| {
            format!(
                "looking up {} timed out after {:?}",
                self.hostname, self.timeout
            )
        })?
        .map_err(|e| format!("looking up {}: {e}", self.hostname))?;
        Ok(lookup
            .iter()
            .map(|ip| {
                let host = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                match &self.port {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }
            })
            .collect())
    }
}

impl Resolver for DnsResolver {
    fn kind(&self) -> &'static str {
        "dns"
    }
    fn first_answer_within(&self) -> Duration {
        self.timeout + Duration::from_millis(100)
    }
    fn run(self: Arc<Self>, out: Publisher) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                out.publish(self.resolve().await);
            }
        })
    }
}
