//! The `loadbalancing` split as it was before `Payload::partition`: the A/B baseline of the
//! `loadbalancing` bench and of `examples/loadbalancing_profile.rs`.

use sluice_engine::Payload;
use sluice_engine::kernels::routing::{self, HashRing, RoutingKey};
use sluice_engine::schema::Table;

/// Positions and backends as `routing::split`, then a mask per backend and one
/// `filter_tables` each (every table masked, cascaded and pruned once per backend).
pub fn split_per_backend_filter(
    payload: &Payload,
    key: &RoutingKey,
    ring: &HashRing,
) -> Vec<(usize, Payload)> {
    let positions = routing::item_positions(payload, key).expect("positions");
    let owners: Vec<(Table, Vec<usize>)> = positions
        .iter()
        .map(|(t, pos)| {
            let o = pos.iter().map(|&p| ring.backend_at(p).expect("ring"));
            (*t, o.collect())
        })
        .collect();
    let mut used = vec![false; ring.endpoints().len()];
    owners
        .iter()
        .for_each(|(_, o)| o.iter().for_each(|&b| used[b] = true));
    (0..used.len())
        .filter(|&b| used[b])
        .map(|b| {
            let masks: Vec<(Table, Vec<bool>)> = owners
                .iter()
                .map(|(t, o)| (*t, o.iter().map(|&x| x == b).collect()))
                .collect();
            let refs: Vec<(Table, &[bool])> =
                masks.iter().map(|(t, m)| (*t, m.as_slice())).collect();
            (b, payload.filter_tables(&refs).expect("filter"))
        })
        .collect()
}

/// Every part's pending tables built, as the exporter queue does when it takes a part.
pub fn settled(mut parts: Vec<(usize, Payload)>) -> Vec<(usize, Payload)> {
    for (_, p) in &mut parts {
        p.settle();
    }
    parts
}
