#!/usr/bin/env python3
"""Known answers for the `probabilistic` tail-sampling policy, computed from the published
algorithm of the OpenTelemetry Collector's tailsamplingprocessor
(processor/tailsamplingprocessor/internal/sampling/probabilistic.go):

    hashTraceID(salt, traceID) = FNV-1a 64 (hash/fnv New64a) over salt bytes, then the 16 id bytes
    calculateThreshold(ratio)  = big.Float(MaxUint64) * big.NewFloat(ratio), .Uint64()
    sampled                    = hashTraceID(salt, id) <= calculateThreshold(percentage / 100)
    salt ""                    -> "default-hash-seed"

FNV-1a is implemented here from its specification (offset basis 0xcbf29ce484222325, prime
0x100000001b3, xor then multiply), independently of sluice's Rust code. Go's big.Float product
takes the receiver's precision: SetInt(MaxUint64) gives 64 bits, so the exact product is
rounded to a 64-bit mantissa (round half to even) and Uint64() truncates toward zero; exact
rational arithmetic (fractions) reproduces that. Run: python3 probabilistic_known_ids.py > probabilistic_known_ids.json
"""
import json
import random
from fractions import Fraction

MAX_U64 = 2**64 - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) % 2**64
    return h


def go_threshold(percentage: float) -> int:
    ratio = Fraction(percentage / 100)  # the float64 ratio, exactly
    x = MAX_U64 * ratio
    if x == 0:
        return 0
    # round x to 64 significant bits, half to even
    e = 0
    while x >= 2**64:
        x /= 2
        e += 1
    while x < 2**63:
        x *= 2
        e -= 1
    q, r = divmod(x.numerator, x.denominator)
    rem = Fraction(r, x.denominator)
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q % 2 == 1):
        q += 1
    v = Fraction(q) * Fraction(2) ** e
    return min(int(v), MAX_U64)  # Uint64(): truncation toward zero, saturating


def main():
    rng = random.Random(20261124)
    ids = [bytes(16), bytes([0xFF] * 16), bytes(range(16)), bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")]
    ids += [rng.getrandbits(128).to_bytes(16, "big") for _ in range(60)]
    rows = []
    for salt in ["", "my-salt"]:
        for pct in [50.0, 10.0, 0.1, 33.3, 99.99, 100.0, 0.0]:
            threshold = go_threshold(pct)
            seed = salt or "default-hash-seed"
            for tid in ids:
                h = fnv1a64(seed.encode() + tid)
                rows.append({"trace_id": tid.hex(), "hash_salt": salt, "sampling_percentage": pct,
                             "hash": f"{h:016x}", "threshold": f"{threshold:016x}",
                             "sampled": h <= threshold})
    print(json.dumps(rows, indent=0))


if __name__ == "__main__":
    main()
