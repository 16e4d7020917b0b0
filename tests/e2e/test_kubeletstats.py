"""kubeletstats end to end, as the reference deployment runs it: an agent sluice scrapes a
kubelet (here a fake one over HTTPS that checks the service account's bearer token) with
`auth_type: serviceAccount`, stamps the node's name with the `resource` processor (the
reference does it with k8sattributes) and sends the metrics over OTLP to a gateway sluice,
whose `prometheus` exporter (resource attributes as labels) a real Prometheus scrapes. Then
the PromQL of metrics-pipeline.md §10 for CPU and memory must answer from Prometheus with the
values in the kubelet's stats summary, and the scrape must pass `promtool check metrics`.

The service account directory (token, ca.crt) is a temporary one, given to the agent with
SLUICE_SERVICE_ACCOUNT_DIR; rotating the token file to one the kubelet refuses makes the agent
count failed scrapes instead of stopping.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, otlp_receiver
from fake_kubelet import FakeKubelet
from test_prometheus import PROMETHEUS, PROMTOOL, Prometheus, promtool_check
from test_tls import make_pki

SUMMARY = REPO_ROOT / "k8s/testdata/kubeletstats/stats-summary.json"
NODE = "ip-10-0-1-17.ec2.internal"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def test_kubelet_metrics_reach_prometheus_with_the_collectors_names(
        sluice, tmp_path, monkeypatch):
    if not (Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()):
        pytest.fail("prometheus/promtool missing: run scripts/setup-test-env.sh")
    pki = make_pki(tmp_path)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    shutil.copy(pki / "ca.crt", sa / "ca.crt")
    (sa / "token").write_text("e2e-token\n")
    kubelet = FakeKubelet(pki / "server.crt", pki / "server.key", SUMMARY, "e2e-token").start()

    prom_port = free_port()
    gateway = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"prometheus": {
            "endpoint": f"127.0.0.1:{prom_port}",
            "resource_to_telemetry_conversion": {"enabled": True}}},
        "service": {"pipelines": {"metrics": {
            "receivers": ["otlp"], "processors": ["batch"], "exporters": ["prometheus"]}}},
    }, name="gateway")
    monkeypatch.setenv("SLUICE_SERVICE_ACCOUNT_DIR", str(sa))
    agent = sluice({
        "receivers": {"kubeletstats": {
            "auth_type": "serviceAccount",
            "endpoint": kubelet.endpoint,
            "collection_interval": "1s",
            "initial_delay": "0s"}},
        "processors": {
            "resource": {"attributes": [
                {"key": "k8s.node.name", "value": NODE, "action": "insert"}]},
            "batch": {"timeout": "100ms"}},
        "exporters": {"otlp": {"endpoint": gateway.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": {"metrics": {
            "receivers": ["kubeletstats"], "processors": ["resource", "batch"],
            "exporters": ["otlp"]}}},
    }, name="agent")
    prom = Prometheus(tmp_path, {"otel-gateway": f"127.0.0.1:{prom_port}"})
    try:
        scheduler = 'k8s_pod_name="kube-scheduler-ip-10-0-1-17",k8s_container_name="kube-scheduler"'
        wait_for(lambda: prom.query(f"container_cpu_time_seconds_total{{{scheduler}}}"), 30,
                 "container_cpu_time_seconds_total in Prometheus")

        # §10: CPU and memory, per container, with the resource attributes as labels
        assert prom.value(f"container_cpu_time_seconds_total{{{scheduler}}}") == \
            pytest.approx(4.560175707)
        server = 'k8s_pod_name="checkout-7d8f9c5b6-a1b2c",k8s_container_name="server"'
        assert prom.value(f"container_memory_usage_bytes{{{server}}}") == 25088000
        assert prom.value(f"container_memory_rss_bytes{{{server}}}") == 23523328
        # the current CPU gauge: container.cpu.usage ({cpu}), not container_cpu_utilization
        assert prom.value(f'container_cpu_usage{{{scheduler}}}') == pytest.approx(0.003438625)
        assert not prom.query("container_cpu_utilization_ratio")
        series = prom.query(f"container_cpu_time_seconds_total{{{scheduler}}}")[0]["metric"]
        assert series["k8s_namespace_name"] == "kube-system"
        assert series["k8s_pod_uid"] == "5795d0c442cb997ff93c49feeb9f6386"
        assert series["k8s_node_name"] == NODE
        assert series["otel_scope_name"].endswith("/receiver/kubeletstatsreceiver")

        # which gateway pod served which node's metrics
        groups = prom.query("group by (instance, k8s_node_name) (container_cpu_time_seconds_total)")
        assert [g["metric"] for g in groups] == [
            {"instance": f"127.0.0.1:{prom_port}", "k8s_node_name": NODE}]
        containers = {r["metric"]["k8s_container_name"]
                      for r in prom.query("container_memory_usage_bytes")}
        assert containers == {"kube-scheduler", "server", "istio-proxy", "report"}

        # pod and node metrics
        assert prom.value('k8s_pod_memory_usage_bytes{k8s_pod_name="checkout-7d8f9c5b6-a1b2c"}') \
            == 77726976
        assert prom.value('k8s_pod_cpu_time_seconds_total{k8s_pod_name="checkout-7d8f9c5b6-a1b2c"}') \
            == pytest.approx(9.371467923)
        assert prom.value(f'k8s_node_memory_working_set_bytes{{k8s_node_name="{NODE}"}}') \
            == 1334567890
        assert prom.value('k8s_node_network_io_bytes_total{direction="receive",interface="eth0"}') \
            == 948305524
        # a field the summary lacks is no series, not a zero
        assert not prom.query('k8s_pod_memory_usage_bytes{k8s_pod_name="nightly-report-28571230-q8zkx"}')

        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/metrics", timeout=10) as r:
            promtool_check(r.read().decode())
        for t in prom.api("targets")["activeTargets"]:
            assert t["health"] == "up" and not t["lastError"], t

        # the agent's self-telemetry: the Collector's receiver and scraper series
        assert agent.metric("otelcol_receiver_accepted_metric_points_total",
                            receiver="kubeletstats") >= 83
        assert agent.metric("otelcol_scraper_scraped_metric_points_total",
                            receiver="kubeletstats", scraper="kubeletstats") >= 83
        assert all(auth == "Bearer e2e-token" for _, auth in kubelet.seen())

        # the token rotates to one the kubelet refuses: failures are counted, the agent runs on
        (sa / "token").write_text("revoked-token\n")
        failed = agent.wait_metric("sluice_scraper_failed_scrapes_total",
                                   lambda v: v is not None and v >= 2, timeout=15,
                                   receiver="kubeletstats", reason="http_status")
        assert failed >= 2
        assert agent.proc.poll() is None
        # and recovers when the kubelet accepts it
        kubelet.set_token("revoked-token")
        before = agent.metric("otelcol_receiver_accepted_metric_points_total",
                              receiver="kubeletstats")
        after = agent.wait_metric("otelcol_receiver_accepted_metric_points_total",
                                  lambda v: v > before, timeout=15, receiver="kubeletstats")
        assert after > before
    finally:
        prom.stop()
        kubelet.stop()
