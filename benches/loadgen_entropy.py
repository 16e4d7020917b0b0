#!/usr/bin/env python3
"""The information in `sluice loadgen traces` traffic: bits per span that no lossless encoding
can leave out, from the generator's own random draws (src/loadgen/shapes.rs, `traces`).

    python3 benches/loadgen_entropy.py [--spans-per-trace 8] [--services 5] [--noise-rate 0.05]
                                       [--error-rate 0.01] [--latency-ms 50]

Why: issue 13 asks the agent -> gateway hop for <= 0.5x the bytes of OTLP + zstd on this
traffic. Every draw the generator makes is uniform over a known range (or log-normal, for
durations), so the traffic's entropy per span is a sum that can be written down; no encoder,
Flight or OTLP, can send a span in fewer bytes on average (framing, schemas and headers come on
top). The script prints that floor beside the bytes measured, so the target can be read against
it.

What it counts (each a draw in `traces`): a fresh 16-byte trace id per trace and per probe
(rewritten per send from a run-wide counter: as random as an SDK's), an 8-byte span id per
span, the root's start (uniform over 5 s) and a probe's (over 1 s), each span's duration
(log-normal, sigma 0.8, median `latency_ms / (k + 1)`, in nanoseconds), the role and service
picks, the entry span's route, method, user agent, session id (64 bits in hex) and client
address, a publish span's message id (64 bits) and body size (12 bits), which span of a trace
failed. Resource attributes are left out (a stream of pods, a few bits per span at most), which
makes the floor lower, not higher.

The floor is for spans that do not repeat. `sluice loadgen` replays a pool of pre-encoded
requests with fresh trace ids (`--pool`; the hop benchmark's 256 x 500 spans), so over a long
run span ids, times and attribute values come back every pool's worth of spans; an encoder
that remembers values across a stream (Flight's dictionary deltas, bounded per column) can gain
from that where live traffic would give it nothing.
"""

import argparse
import math


def h_binary(p: float) -> float:
    """Entropy in bits of a yes/no draw with probability p."""
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def h_pick(weights: list[float]) -> float:
    """Entropy in bits of a pick among options with these weights."""
    total = sum(weights)
    return -sum(w / total * math.log2(w / total) for w in weights)


def h_lognormal_ns(median_ns: float, sigma: float) -> float:
    """Entropy in bits of a log-normal draw truncated to whole nanoseconds: its differential
    entropy in log2 units (the 1 ns bin is far below the spread, so the two agree)."""
    return math.log2(median_ns) + 0.5 * math.log2(2 * math.pi * math.e * sigma**2)


def floor_bits_per_span(spans_per_trace: int, services: int, noise_rate: float,
                        error_rate: float, latency_ms: float) -> dict:
    n = max(spans_per_trace, 1)
    routes, agents = 5, 3  # ROUTES and AGENTS in shapes.rs
    span_id, trace_id = 64.0, 128.0

    # The entry span (k = 0): frontend, role 0.
    root = (span_id
            + h_lognormal_ns(max(latency_ms * 1e6, 1e4), 0.8)
            + math.log2(routes)                  # its name: "GET {route}"
            + h_pick([2, 1, 1])                  # http.request.method: GET, GET, POST, PUT
            + math.log2(routes)                  # http.route
            + math.log2(routes) + 64             # url.full: a route and a 64-bit session id
            + math.log2(agents)                  # user_agent.original
            + 2 * math.log2(255))                # client.address 10.1.x.y
    # Each downstream span (k >= 1): a role of three, a service, and the role's draws.
    role_draws = (math.log2(3)                   # role 1: which database
                  + (64 + math.log2(4096))       # role 2: message id, body size
                  + 0.0) / 3                     # role 3: nothing drawn
    downstream = sum(span_id + math.log2(3) + math.log2(services) + role_draws
                     + h_lognormal_ns(max(latency_ms * 1e6 / (k + 1), 1e4), 0.8)
                     for k in range(1, n))
    failed = h_binary(error_rate) + error_rate * math.log2(n)
    trace = trace_id + math.log2(5e9) + failed + root + downstream
    probe = trace_id + span_id + math.log2(1e9) + math.log2(services)

    # A draw is a probe with probability q·n / (1 − q + q·n) (so probes are q of all spans).
    p = noise_rate * n / (1 - noise_rate + noise_rate * n)
    bits_per_draw = h_binary(p) + p * probe + (1 - p) * trace
    spans_per_draw = p + (1 - p) * n
    ids = (p * (trace_id + span_id) + (1 - p) * (trace_id + n * span_id)) / spans_per_draw
    return {
        "bits_per_span": bits_per_draw / spans_per_draw,
        "id_bits_per_span": ids,
        "probe_share_of_spans": p / spans_per_draw,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans-per-trace", type=int, default=8)
    ap.add_argument("--services", type=int, default=5)
    ap.add_argument("--noise-rate", type=float, default=0.05)
    ap.add_argument("--error-rate", type=float, default=0.01)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--otlp-zstd", type=float, default=None,
                    help="measured OTLP + zstd bytes per span, to print the 0.5x target beside")
    a = ap.parse_args()
    f = floor_bits_per_span(a.spans_per_trace, min(max(a.services, 1), 8), a.noise_rate,
                            a.error_rate, a.latency_ms)
    print(f"entropy floor: {f['bits_per_span'] / 8:.2f} B/span "
          f"(of it trace and span ids {f['id_bits_per_span'] / 8:.2f} B/span; "
          f"probes {f['probe_share_of_spans']:.1%} of spans)")
    if a.otlp_zstd:
        print(f"OTLP + zstd {a.otlp_zstd:.2f} B/span: the floor is "
              f"{f['bits_per_span'] / 8 / a.otlp_zstd:.2f}x of it; 0.5x is {a.otlp_zstd / 2:.2f}")


if __name__ == "__main__":
    main()
