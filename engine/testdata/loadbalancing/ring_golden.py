#!/usr/bin/env python3
"""Golden cases for the `loadbalancing` exporter's consistent-hash ring, computed from the
OpenTelemetry Collector's algorithm (exporter/loadbalancingexporter/consistent_hashing.go),
written here again from its description, independently of sluice's Rust code:

    maxPositions = 36000, defaultWeight = 100 (points per endpoint)
    positionsFor(endpoint, i) = crc32.ChecksumIEEE(endpoint bytes ++ [byte(i)]) % maxPositions
    ring: for each endpoint in the given (sorted) order, for i in 0..100, a position not yet
          taken is added with that endpoint as owner (an earlier owner keeps a taken position);
          items sorted by position
    endpointFor(key) = the item found by `bsearch` (below) for crc32.ChecksumIEEE(key) % 36000

`bsearch` is transcribed as the Go code does it (halves, equality checks, wrap to the first
item when the position is past the last one), not as "lower bound": the Rust side implements a
lower-bound table, and these cases are what says the two agree. zlib.crc32 is CRC-32/IEEE
(reflected polynomial 0xEDB88320), the same as Go's crc32.ChecksumIEEE.

For the `traceID` routing key the key is the 16 raw trace-id bytes.

Run: python3 ring_golden.py > ring_golden.json
"""
import json
import random
import zlib

MAX_POSITIONS = 36000
WEIGHT = 100


def positions_for(endpoint: str):
    return [zlib.crc32(endpoint.encode() + bytes([i])) % MAX_POSITIONS for i in range(WEIGHT)]


def ring_items(endpoints):
    taken = set()
    items = []
    for e in endpoints:
        for pos in positions_for(e):
            if pos in taken:
                continue
            taken.add(pos)
            items.append((pos, e))
    items.sort(key=lambda it: it[0])  # positions are unique: the sort is total
    return items


def bsearch(pos, left, right):
    if left[-1][0] == pos:
        return left[-1]
    if right[0][0] == pos:
        return right[0]
    if pos > right[-1][0]:
        return left[0]
    if pos > left[-1][0]:
        if len(right) == 1:
            return right[0]
        return bsearch(pos, right[: len(right) // 2], right[len(right) // 2 :])
    if len(left) == 1:
        return left[0]
    return bsearch(pos, left[: len(left) // 2], left[len(left) // 2 :])


def endpoint_for(items, key: bytes):
    pos = zlib.crc32(key) % MAX_POSITIONS
    return pos, bsearch(pos, items[: len(items) // 2], items[len(items) // 2 :])[1]


def case(name, endpoints, trace_ids):
    items = ring_items(endpoints)
    owned = {e: 0 for e in endpoints}
    for _, e in items:
        owned[e] += 1
    routes = []
    for tid in trace_ids:
        pos, e = endpoint_for(items, tid)
        routes.append({"trace_id": tid.hex(), "position": pos, "endpoint": e})
    return {
        "name": name,
        "endpoints": endpoints,
        "ring_size": len(items),
        "first_positions": [[p, e] for p, e in items[:8]],
        "positions_owned": owned,
        "routes": routes,
    }


def main():
    rng = random.Random(20261206)
    ids = [bytes(rng.getrandbits(8) for _ in range(16)) for _ in range(48)]
    # Edge keys: the zero trace id (what an absent trace id hashes as), all ones, and ids whose
    # position lands exactly on a ring item or past the last one (the wrap-around).
    ids += [bytes(16), bytes([0xFF] * 16)]
    cases = [
        case("one backend", ["10.0.0.1:4317"], ids[:8]),
        case(
            "three gateways (DNS answers, ip:port)",
            sorted(["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"]),
            ids,
        ),
        case(
            "two gateways, then a third (the scale-up the e2e test does)",
            sorted(["10.0.0.1:4317", "10.0.0.2:4317"]),
            ids,
        ),
        case(
            "static hostnames without a port (the ring hashes them as written)",
            sorted(["gateway-0.gateway", "gateway-1.gateway", "gateway-2.gateway", "gateway-3.gateway"]),
            ids,
        ),
        case(
            "IPv6 DNS answers",
            sorted(["[fd00::1]:4317", "[fd00::2]:4317"]),
            ids[:16],
        ),
    ]
    # Keys landing exactly on a ring item and past the last item, found by search.
    items = ring_items(cases[1]["endpoints"])
    exact, wrap = None, None
    n = 0
    while exact is None or wrap is None:
        key = n.to_bytes(16, "big")
        pos = zlib.crc32(key) % MAX_POSITIONS
        if exact is None and any(p == pos for p, _ in items):
            exact = key
        if wrap is None and pos > items[-1][0]:
            wrap = key
        n += 1
    cases.append(case("exact hit and wrap-around", cases[1]["endpoints"], [exact, wrap]))
    print(json.dumps({"source": "ring_golden.py", "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
