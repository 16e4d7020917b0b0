//! The `loadbalancing` split as it was before `Payload::partition`: the A/B baseline of the
//! `loadbalancing` bench and of `examples/loadbalancing_profile.rs`.

use sluice_engine::Payload;
use sluice_engine::kernels::routing::{self, HashRing, RoutingKey};

/// Positions and backends as `routing::split`, then a mask per backend and one
/// `filter_tables` each (every table masked, cascaded and pruned once per backend): the
/// engine's model of the split before `Payload::partition`.
pub fn split_per_backend_filter(
    payload: &Payload,
    key: &RoutingKey,
    ring: &HashRing,
) -> Vec<(usize, Payload)> {
    let positions = routing::item_positions(payload, key).expect("positions");
    routing::split_per_backend_filter(payload, &positions, ring).expect("filter")
}

/// Every part's pending tables built, as the exporter queue does when it takes a part.
pub fn settled(mut parts: Vec<(usize, Payload)>) -> Vec<(usize, Payload)> {
    for (_, p) in &mut parts {
        p.settle();
    }
    parts
}
