//! Where an `otlp` exporter's requests go, as gRPC-Go (the Collector) decides it from
//! `endpoint` and `balancer_name`.
//!
//! - `host:port`, `http://host:port`, `https://host:port`: one lazily connected HTTP/2 channel
//!   to the name. gRPC-Go dials such a target through its `passthrough` resolver: one address,
//!   so even its `round_robin` has one connection to use.
//! - `dns:///host:port`: the name is resolved (A and AAAA), as gRPC-Go's `dns` resolver does.
//!   With `balancer_name: round_robin` (the Collector's default since configgrpc made it so)
//!   there is one channel per address and each request goes to the next one in turn: what
//!   spreads an exporter's load over the pods behind a headless service. With `pick_first`,
//!   one channel to the name (its first address that answers). The name is resolved again
//!   every [`RESOLVE_EVERY`] (gRPC-Go's minimum re-resolution interval), in the background;
//!   channels of addresses still there are kept, new addresses get new ones, and a lookup that
//!   fails or finds nothing keeps the last addresses. Until the first lookup answers, requests
//!   go to the name itself.
//!
//! TLS connects to each address with the name (or `tls.server_name_override`) as the server
//! name, and every request's `:authority` is `host:port`, as gRPC-Go sends it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::loadbalancing::resolver::DnsResolver;

/// How often a `dns:///` name is resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How long the first lookup may hold the first request before it goes to the name itself.
const FIRST_LOOKUP: Duration = Duration::from_secs(1);

/// `balancer_name`: gRPC-Go's two built-in policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer {
    PickFirst,
    RoundRobin,
}

impl Balancer {
    /// The Collector's names; unset is `round_robin`, its default.
    pub fn parse(name: Option<&str>) -> Result<Balancer, String> {
        match name {
            None | Some("round_robin") => Ok(Balancer::RoundRobin),
            Some("pick_first") => Ok(Balancer::PickFirst),
            Some(other) => Err(format!(
                "invalid balancer_name {other:?}: round_robin (default) or pick_first"
            )),
        }
    }
}

/// Makes the channel to one address (TLS and connect timeout as configured).
pub type ConnectTo = Box<dyn Fn(SocketAddr) -> Result<Channel, String> + Send + Sync>;

/// One channel, or one per resolved address taken in turn.
#[derive(Clone)]
pub enum GrpcTarget {
    One(Channel),
    RoundRobin(Arc<RoundRobin>),
}

impl GrpcTarget {
    /// The channel for the next request.
    pub async fn channel(&self) -> Channel {
        match self {
            GrpcTarget::One(c) => c.clone(),
            GrpcTarget::RoundRobin(rr) => rr.next().await,
        }
    }
}

pub struct RoundRobin {
    resolver: DnsResolver,
    connect: ConnectTo,
    /// To the name itself: until the first lookup answers.
    by_name: Channel,
    channels: RwLock<Arc<Vec<(SocketAddr, Channel)>>>,
    turn: AtomicUsize,
    resolved_at: Mutex<Option<Instant>>,
    resolving: AtomicBool,
}

impl RoundRobin {
    pub fn new(resolver: DnsResolver, connect: ConnectTo, by_name: Channel) -> Arc<Self> {
        Arc::new(RoundRobin {
            resolver,
            connect,
            by_name,
            channels: RwLock::new(Arc::new(Vec::new())),
            turn: AtomicUsize::new(0),
            resolved_at: Mutex::new(None),
            resolving: AtomicBool::new(false),
        })
    }

    async fn next(self: &Arc<Self>) -> Channel {
        let due = {
            let at = self.resolved_at.lock().unwrap_or_else(|e| e.into_inner());
            at.map(|t| t.elapsed() >= RESOLVE_EVERY)
        };
        match due {
            // Never resolved: the first request waits for the first answer (briefly).
            None => {
                let _ = tokio::time::timeout(FIRST_LOOKUP, self.resolve()).await;
            }
            Some(true) if !self.resolving.swap(true, Ordering::AcqRel) => {
                let me = self.clone();
                tokio::spawn(async move {
                    me.resolve().await;
                    me.resolving.store(false, Ordering::Release);
                });
            }
            Some(_) => {}
        }
        let channels = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if channels.is_empty() {
            return self.by_name.clone();
        }
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % channels.len();
        channels[i].1.clone()
    }

    /// One lookup; the channel list follows its answer (kept as it is when the lookup fails
    /// or finds nothing).
    async fn resolve(&self) {
        let answer = self.resolver.resolve().await;
        *self.resolved_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let mut addrs: Vec<SocketAddr> = match answer {
            Ok(found) => found.iter().filter_map(|a| a.parse().ok()).collect(),
            Err(e) => {
                tracing::warn!(host = %self.resolver.hostname, error = %e, "otlp exporter: resolving the dns:/// endpoint failed; keeping the last addresses");
                return;
            }
        };
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return;
        }
        let old = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if old.iter().map(|(a, _)| *a).eq(addrs.iter().copied()) {
            return;
        }
        let mut next = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match old.iter().find(|(a, _)| *a == addr) {
                Some((_, c)) => next.push((addr, c.clone())),
                None => match (self.connect)(addr) {
                    Ok(c) => next.push((addr, c)),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "otlp exporter: cannot make a channel")
                    }
                },
            }
        }
        tracing::debug!(host = %self.resolver.hostname, addresses = next.len(), "otlp exporter: round_robin over the dns:/// endpoint's addresses");
        *self.channels.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// The addresses requests go to now (tests).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, _)| *a)
            .collect()
    }
}
