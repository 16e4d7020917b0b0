"""The agent -> gateway hop with real processes: the OpenTelemetry Python SDK sends traces whose
spans come from two services (two agents), in separate requests a second apart; two sluice
agents route them with the `loadbalancing` exporter to sluice gateways running `tail_sampling`.

Each gateway feeds two pipelines from its receiver: `traces/raw` (straight to a sink: what the
gateway received) and `traces/sampled` (tail_sampling, then a sink: what it kept). The agents
also send everything to a reference gateway, alone, with the same sampling: what the fleet kept
must be what one gateway seeing every span keeps.

- test_static_scale_up_by_reload: 2 gateways, then 3 by rewriting the agents' static hostnames
  and sending SIGHUP. Every trace started before or after the change is whole on the gateway
  the Collector's ring (computed here in Python, independently) names; traces in flight across
  the change are counted and reported.
- test_dns_scale_up_and_down: the `dns` resolver against a DNS responder on loopback; 2 -> 3
  gateways, then the third stops and leaves the DNS answer while the agents still hold data for
  it: that data is routed again (counted) and no span is lost.
- test_k8s_scale_out_by_endpoint_slices: the `k8s` resolver watching a service's
  EndpointSlices on the fake Kubernetes API server (`sluice-fake-apiserver`: TLS, bearer
  token, list + watch); 2 -> 3 gateways by a pod turning ready, then the third gateway's pod
  turns unready while the agents hold data for it: routed again, nothing lost.
- test_flight_protocol: `protocol.flight`, the agents speaking Arrow Flight to gateways with a
  `flight` receiver: every trace whole on the gateway the ring names, as with OTLP.
- test_mixed_fleet_otlp_and_flight_agents_agree: one agent as a Collector agent is configured
  (`protocol.otlp`, backends `<ip>:<otlp port>`), the other with `protocol.flight` and `port`
  (the shipped agent.yaml's way) on the same backend strings: every trace, half its spans
  through each agent, is whole on the one gateway the Collector's ring names. The OTLP agent
  routes the requests' bytes without decoding them, the Flight agent decodes: they agree.

The agents with `protocol.otlp` (otlp -> batch -> loadbalancing) route the SDK's requests as
their bytes (test_loadbalancing_undecoded.py checks that path on its own).

Decision waits are 2 s, so each test takes tens of seconds."""

from __future__ import annotations

import importlib.util
import signal
import socket
import time

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import REPO_ROOT, free_port, otlp_receiver, to_yaml
from dns_responder import DnsResponder
from otlp_sink import OtlpSink, flatten_spans
from test_k8sattributes import FakeCluster

_spec = importlib.util.spec_from_file_location(
    "ring_golden", REPO_ROOT / "engine" / "testdata" / "loadbalancing" / "ring_golden.py")
ring_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ring_golden)

DECISION_WAIT_S = 2


def collector_backend(endpoints: list[str], trace_id_hex: str) -> str:
    """The backend the Collector's ring gives a trace id (see ring_golden.py)."""
    items = ring_golden.ring_items(sorted(endpoints))
    return ring_golden.endpoint_for(items, bytes.fromhex(trace_id_hex))[1]


def gateway_config(grpc_addr: str, raw: OtlpSink, sampled: OtlpSink,
                   receiver: str = "otlp", flight_addr: str | None = None) -> dict:
    """`receiver`: `otlp` (gRPC on grpc_addr) or `flight` (Arrow Flight on grpc_addr); with
    `flight_addr`, a flight receiver there too (both feed the pipelines)."""
    insecure = {"tls": {"insecure": True}}
    receivers = ({"otlp": {"protocols": {"grpc": {"endpoint": grpc_addr}}}}
                 if receiver == "otlp" else {"flight": {"endpoint": grpc_addr}})
    if flight_addr:
        receivers["flight"] = {"endpoint": flight_addr}
    names = list(receivers)
    return {
        "receivers": receivers,
        "processors": {"tail_sampling": {
            "decision_wait": f"{DECISION_WAIT_S}s",
            "policies": [
                {"name": "errors", "type": "status_code",
                 "status_code": {"status_codes": ["ERROR"]}},
                {"name": "half", "type": "probabilistic",
                 "probabilistic": {"sampling_percentage": 50}},
            ]}},
        "exporters": {
            "otlp/raw": {"endpoint": raw.grpc_endpoint, **insecure},
            "otlp/sampled": {"endpoint": sampled.grpc_endpoint, **insecure},
        },
        "service": {"pipelines": {
            "traces/raw": {"receivers": names, "processors": [],
                           "exporters": ["otlp/raw"]},
            "traces/sampled": {"receivers": names, "processors": ["tail_sampling"],
                               "exporters": ["otlp/sampled"]},
        }},
    }


def agent_config(resolver: dict, reference: str | None, protocol: str = "otlp",
                 flight_port: int | None = None) -> dict:
    exporters = {"loadbalancing": {
        "protocol": {protocol: {
            "tls": {"insecure": True}, "timeout": "2s",
            "retry_on_failure": {"initial_interval": "100ms", "max_interval": "500ms"},
            **({"port": flight_port} if flight_port else {})}},
        "resolver": resolver}}
    if reference:
        exporters["otlp/reference"] = {"endpoint": reference, "tls": {"insecure": True}}
    return {
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": exporters,
        "service": {"pipelines": {"traces": {
            "receivers": ["otlp"], "processors": ["batch"], "exporters": list(exporters)}}},
    }


class Gateway:
    def __init__(self, sluice, name: str, grpc_addr: str, receiver: str = "otlp",
                 flight_addr: str | None = None):
        self.raw = OtlpSink().start()
        self.sampled = OtlpSink().start()
        self.addr = grpc_addr
        self.proc = sluice(gateway_config(grpc_addr, self.raw, self.sampled, receiver,
                                          flight_addr), name=name)

    def traces(self, sink: str = "raw") -> dict[str, set[str]]:
        """trace id -> span ids received."""
        out: dict[str, set[str]] = {}
        for s in flatten_spans(getattr(self, sink).requests("traces")):
            out.setdefault(s["trace_id"], set()).add(s["span_id"])
        return out

    def close(self):
        self.raw.stop()
        self.sampled.stop()


class Services:
    """Two instrumented services: `frontend` reports to agent A, `orders` to agent B."""

    def __init__(self, agent_a: str, agent_b: str):
        self.providers = []
        self.tracers = []
        for name, endpoint in (("frontend", agent_a), ("orders", agent_b)):
            p = TracerProvider(resource=Resource.create({"service.name": name}))
            p.add_span_processor(SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=5)))
            self.providers.append(p)
            self.tracers.append(p.get_tracer("e2e.loadbalancing"))

    def begin(self, n: int, tag: str, errors_every: int = 5) -> list:
        """Starts n traces: the frontend's root stays open; the orders service's first span is
        sent now (one request each)."""
        started = []
        for i in range(n):
            root = self.tracers[0].start_span(f"GET /{tag}/{i}", kind=SpanKind.SERVER)
            ctx = trace_api.set_span_in_context(root)
            child = self.tracers[1].start_span("SELECT orders", context=ctx, kind=SpanKind.CLIENT)
            if i % errors_every == 0:
                child.set_status(Status(StatusCode.ERROR, "deadlock"))
            child.end()
            started.append((root, ctx))
        return started

    def finish(self, started: list) -> list[str]:
        """The second orders span and the root of each trace; returns their trace ids."""
        ids = []
        for root, ctx in started:
            self.tracers[1].start_span("publish order", context=ctx,
                                       kind=SpanKind.PRODUCER).end()
            root.end()
            ids.append(format(root.get_span_context().trace_id, "032x"))
        return ids

    def shutdown(self):
        for p in self.providers:
            p.shutdown()


def stop_in_order(agents, gateways: list[Gateway]):
    """Agents first, then gateways (which flush what tail sampling holds to their sinks), then
    the sinks; each process must exit 0."""
    codes = {}
    for p in [*agents, *(g.proc for g in gateways)]:
        if p.proc is not None and p.proc.poll() is None:
            codes[p.name] = p.stop()
            p.exit_reported = True
    for g in gateways:
        g.close()
    assert all(rc == 0 for rc in codes.values()), codes


def wait_for(what: str, predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def placement(gateways: list[Gateway]) -> dict[str, dict[str, int]]:
    """trace id -> {gateway addr: spans received}."""
    out: dict[str, dict[str, int]] = {}
    for g in gateways:
        for tid, spans in g.traces().items():
            out.setdefault(tid, {})[g.addr] = len(spans)
    return out


def spans_total(gateways: list[Gateway]) -> int:
    return sum(len(s) for g in gateways for s in g.traces().values())


def port_free_on(port: int, hosts: list[str]) -> bool:
    for h in hosts:
        with socket.socket() as s:
            try:
                s.bind((h, port))
            except OSError:
                return False
    return True


def test_static_scale_up_by_reload(sluice, tmp_path):
    gateways = [Gateway(sluice, f"gateway{i}", f"127.0.0.1:{free_port()}") for i in range(3)]
    reference = Gateway(sluice, "reference", f"127.0.0.1:{free_port()}")
    two = [g.addr for g in gateways[:2]]
    agents = [sluice(agent_config({"static": {"hostnames": two}}, reference.addr),
                     name=f"agent{i}") for i in range(2)]
    svc = Services(agents[0].grpc_endpoint, agents[1].grpc_endpoint)
    try:
        # Phase 1: two gateways. Spans of a trace leave two agents a second apart.
        before = svc.begin(40, "before")
        time.sleep(1)
        ids_before = svc.finish(before)
        wait_for("phase 1 spans at the gateways", lambda: spans_total(gateways) == 120)

        # In flight across the change: first spans now, the rest after the reload.
        in_flight = svc.begin(20, "inflight")
        for a in agents:
            a.config["exporters"]["loadbalancing"]["resolver"]["static"]["hostnames"] = \
                [g.addr for g in gateways]
            a.config_path.write_text(to_yaml(a.config) + "\n")
            a.proc.send_signal(signal.SIGHUP)
        for a in agents:
            assert a.wait_metric("otelcol_loadbalancer_num_backends", lambda v: v == 3,
                                 resolver="static") == 3, a.log_tail()
            a.wait_ready()
        ids_in_flight = svc.finish(in_flight)
        after = svc.begin(40, "after")
        time.sleep(1)
        ids_after = svc.finish(after)
        wait_for("every span at the gateways", lambda: spans_total(gateways) == 300)
    except BaseException:
        svc.shutdown()
        stop_in_order(agents, gateways + [reference])
        raise
    svc.shutdown()

    where = placement(gateways)
    three = [g.addr for g in gateways]
    for ids, ring in ((ids_before, two), (ids_after, three)):
        for tid in ids:
            assert list(where[tid]) == [collector_backend(ring, tid)], (tid, where[tid])
            assert sum(where[tid].values()) == 3
    split = [tid for tid in ids_in_flight if len(where[tid]) > 1]
    print(f"\nin-flight traces split by the 2 -> 3 change: {len(split)} of {len(ids_in_flight)}")
    assert len(split) < len(ids_in_flight)

    # What the fleet kept is what one gateway seeing everything keeps.
    time.sleep(DECISION_WAIT_S + 2)
    whole = set(ids_before) | set(ids_after)
    fleet: dict[str, set[str]] = {}
    for g in gateways:
        for tid, spans in g.traces("sampled").items():
            fleet.setdefault(tid, set()).update(spans)
    alone = reference.traces("sampled")
    kept = {t: s for t, s in fleet.items() if t in whole}
    assert kept == {t: s for t, s in alone.items() if t in whole}
    assert 0 < len(kept) < len(whole), "some kept, some dropped"
    stop_in_order(agents, gateways + [reference])


def test_dns_scale_up_and_down(sluice, monkeypatch):
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    port = next(p for p in (free_port() for _ in range(50)) if port_free_on(p, hosts[1:]))
    gateways = [Gateway(sluice, f"gateway{i}", f"{h}:{port}") for i, h in enumerate(hosts)]
    dns = DnsResponder(hosts[:2]).start()
    monkeypatch.setenv("SLUICE_DNS_NAMESERVER", dns.address)
    resolver = {"dns": {"hostname": "gateways.e2e.test", "port": port, "interval": "200ms"}}
    agents = [sluice(agent_config(resolver, None), name=f"agent{i}") for i in range(2)]
    svc = Services(agents[0].grpc_endpoint, agents[1].grpc_endpoint)
    endpoints = [f"{h}:{port}" for h in hosts]
    try:
        first = svc.finish(svc.begin(30, "two"))
        wait_for("phase 1 spans", lambda: spans_total(gateways) == 90)

        dns.set(hosts)
        for a in agents:
            assert a.wait_metric("otelcol_loadbalancer_num_backends", lambda v: v == 3,
                                 resolver="dns") == 3, a.log_tail()
        second = svc.finish(svc.begin(30, "three"))
        wait_for("phase 2 spans", lambda: spans_total(gateways) == 180)
        where = placement(gateways)
        for ids, ring in ((first, endpoints[:2]), (second, endpoints)):
            for tid in ids:
                assert list(where[tid]) == [collector_backend(ring, tid)], (tid, where[tid])

        # The third gateway goes away first (its pod stops); the agents keep its share of the
        # next traces queued, retrying, until DNS stops naming it.
        third = gateways[2]
        assert third.proc.stop() == 0, third.proc.log_tail()
        third.proc.exit_reported = True
        received_by_third = sum(len(s) for s in third.traces().values())
        third_ids = svc.finish(svc.begin(30, "removed"))
        held = [t for t in third_ids if collector_backend(endpoints, t) == endpoints[2]]
        assert held, "some of these traces hash to the third gateway"
        time.sleep(1)
        dns.set(hosts[:2])
        wait_for("every span delivered", lambda: spans_total(gateways) == 270, timeout=30)
        assert sum(len(s) for s in third.traces().values()) == received_by_third
        where = placement(gateways)
        for tid in held:
            assert endpoints[2] not in where[tid]
            assert sum(where[tid].values()) == 3
        rerouted = sum(a.metric("otelcol_loadbalancer_rerouted_spans_total") or 0 for a in agents)
        failed = sum(a.metric("otelcol_exporter_send_failed_spans_total") or 0 for a in agents)
        print(f"\nspans routed again after the third gateway left: {rerouted:.0f}")
        assert rerouted >= 1
        assert failed == 0
    finally:
        svc.shutdown()
        stop_in_order(agents, gateways)
        dns.stop()


def gateway_slice(hosts_ready: dict[str, bool]) -> dict:
    """The EndpointSlice of service `gateway` in `telemetry`: one endpoint per host."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "gateway-x7k2p", "namespace": "telemetry",
                     "labels": {"kubernetes.io/service-name": "gateway"}},
        "addressType": "IPv4",
        "ports": [{"name": "otlp-grpc", "port": 4317, "protocol": "TCP"}],
        "endpoints": [{"addresses": [h], "conditions": {"ready": ready},
                       "hostname": f"gateway-{i}"}
                      for i, (h, ready) in enumerate(hosts_ready.items())],
    }


def test_k8s_scale_out_by_endpoint_slices(sluice, tmp_path, monkeypatch):
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    port = next(p for p in (free_port() for _ in range(50)) if port_free_on(p, hosts[1:]))
    gateways = [Gateway(sluice, f"gateway{i}", f"{h}:{port}") for i, h in enumerate(hosts)]
    cluster = FakeCluster(tmp_path, [gateway_slice({hosts[0]: True, hosts[1]: True,
                                                    hosts[2]: False})])
    monkeypatch.setenv("KUBECONFIG", cluster.info["kubeconfig"])
    resolver = {"k8s": {"service": "gateway.telemetry", "ports": [port], "timeout": "10s"}}
    agents = [sluice(agent_config(resolver, None), name=f"agent{i}") for i in range(2)]
    svc = Services(agents[0].grpc_endpoint, agents[1].grpc_endpoint)
    endpoints = [f"{h}:{port}" for h in hosts]
    try:
        for a in agents:
            assert a.wait_metric("otelcol_loadbalancer_num_backends", lambda v: v == 2,
                                 resolver="k8s") == 2, a.log_tail()
        first = svc.finish(svc.begin(30, "two"))
        wait_for("phase 1 spans", lambda: spans_total(gateways) == 90)

        # The third gateway's pod turns ready.
        cluster.control("POST", "/objects", gateway_slice(dict.fromkeys(hosts, True)))
        for a in agents:
            assert a.wait_metric("otelcol_loadbalancer_num_backends", lambda v: v == 3,
                                 resolver="k8s") == 3, a.log_tail()
        second = svc.finish(svc.begin(30, "three"))
        wait_for("phase 2 spans", lambda: spans_total(gateways) == 180)
        where = placement(gateways)
        for ids, ring in ((first, endpoints[:2]), (second, endpoints)):
            for tid in ids:
                assert list(where[tid]) == [collector_backend(ring, tid)], (tid, where[tid])

        # The third gateway stops before its endpoint turns unready (a pod killed before the
        # EndpointSlice controller notices): the agents hold its share of the next traces
        # until the slice says it is not ready, then route it again.
        third = gateways[2]
        assert third.proc.stop() == 0, third.proc.log_tail()
        third.proc.exit_reported = True
        received_by_third = sum(len(s) for s in third.traces().values())
        held_ids = svc.finish(svc.begin(30, "removed"))
        held = [t for t in held_ids if collector_backend(endpoints, t) == endpoints[2]]
        assert held, "some of these traces hash to the third gateway"
        time.sleep(1)
        cluster.control("POST", "/objects",
                        gateway_slice({hosts[0]: True, hosts[1]: True, hosts[2]: False}))
        wait_for("every span delivered", lambda: spans_total(gateways) == 270, timeout=30)
        assert sum(len(s) for s in third.traces().values()) == received_by_third
        where = placement(gateways)
        for tid in held:
            assert endpoints[2] not in where[tid]
            assert sum(where[tid].values()) == 3
        rerouted = sum(a.metric("otelcol_loadbalancer_rerouted_spans_total") or 0 for a in agents)
        failed = sum(a.metric("otelcol_exporter_send_failed_spans_total") or 0 for a in agents)
        print(f"\nspans routed again after the third gateway's pod turned unready: {rerouted:.0f}")
        assert rerouted >= 1
        assert failed == 0
        # The agents asked for this service's slices only, with the cluster's token.
        requests = cluster.control("GET", "/requests")
        slices = [r for r in requests
                  if r["path"] == "/apis/discovery.k8s.io/v1/namespaces/telemetry/endpointslices"]
        assert slices and all(r["authorized"] for r in slices), requests
        assert any(r["query"].get("watch") in ("1", "true") for r in slices), slices
    finally:
        svc.shutdown()
        stop_in_order(agents, gateways)
        cluster.stop()


def test_flight_protocol(sluice):
    gateways = [Gateway(sluice, f"gateway{i}", f"127.0.0.1:{free_port()}", receiver="flight")
                for i in range(3)]
    endpoints = [g.addr for g in gateways]
    agents = [sluice(agent_config({"static": {"hostnames": endpoints}}, None, "flight"),
                     name=f"agent{i}") for i in range(2)]
    svc = Services(agents[0].grpc_endpoint, agents[1].grpc_endpoint)
    try:
        started = svc.begin(40, "flight")
        time.sleep(1)
        ids = svc.finish(started)
        wait_for("every span at the gateways", lambda: spans_total(gateways) == 120)
        where = placement(gateways)
        for tid in ids:
            assert list(where[tid]) == [collector_backend(endpoints, tid)], (tid, where[tid])
            assert sum(where[tid].values()) == 3
        assert len({next(iter(where[t])) for t in ids}) == 3, "every gateway got traces"
        for a in agents:
            assert a.metric("otelcol_exporter_send_failed_spans_total") in (None, 0)
    finally:
        svc.shutdown()
        stop_in_order(agents, gateways)


def test_mixed_fleet_otlp_and_flight_agents_agree(sluice):
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    ports = [p for p in (free_port() for _ in range(100)) if port_free_on(p, hosts[1:])][:2]
    otlp_port, flight_port = ports
    gateways = [Gateway(sluice, f"gateway{i}", f"{h}:{otlp_port}",
                        flight_addr=f"{h}:{flight_port}") for i, h in enumerate(hosts)]
    endpoints = [g.addr for g in gateways]
    resolver = {"static": {"hostnames": endpoints}}
    collector_like = sluice(agent_config(resolver, None, "otlp"), name="agent-otlp")
    flight = sluice(agent_config(resolver, None, "flight", flight_port), name="agent-flight")
    svc = Services(collector_like.grpc_endpoint, flight.grpc_endpoint)
    try:
        started = svc.begin(40, "mixed")
        time.sleep(1)
        ids = svc.finish(started)
        wait_for("every span at the gateways", lambda: spans_total(gateways) == 120)
        where = placement(gateways)
        for tid in ids:
            assert list(where[tid]) == [collector_backend(endpoints, tid)], (tid, where[tid])
            assert sum(where[tid].values()) == 3
        assert len({next(iter(where[t])) for t in ids}) == 3, "every gateway got traces"
        # Each agent spoke its own protocol to the same ring keys.
        for g in gateways:
            assert g.proc.metric("otelcol_receiver_accepted_spans_total", receiver="otlp") > 0
            assert g.proc.metric("otelcol_receiver_accepted_spans_total", receiver="flight") > 0
        assert {k for k in (f"loadbalancing/{e}" for e in endpoints)
                if flight.metric("otelcol_exporter_sent_spans_total", exporter=k)} \
            == {f"loadbalancing/{e}" for e in endpoints}
        # The OTLP agent routed the requests' bytes by a skim of their trace ids; the Flight
        # agent (which sends tables) decoded them: both sent every trace to one gateway.
        assert collector_like.metric("sluice_receiver_undecoded_requests_total",
                                     receiver="otlp") > 0
        assert not flight.metric("sluice_receiver_undecoded_requests_total", receiver="otlp")
    finally:
        svc.shutdown()
        stop_in_order([collector_like, flight], gateways)
