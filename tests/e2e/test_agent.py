"""The reference deployment's agent end to end: the shipped k8s/config/agent.yaml and
k8s/config/gateway.yaml, run by the real binary, with the real OpenTelemetry Python SDK as the
application, the fake Kubernetes API server (`sluice-fake-apiserver`) as the cluster, the fake
kubelet (HTTPS, bearer token) as the node, and a real Prometheus scraping the gateway.

    SDK --OTLP/gRPC--> agent (agent.yaml) --traces: Arrow Flight--> gateway --> sink ("Jaeger")
                       |                  --metrics: OTLP---------> (gateway.yaml)
                       ^ kubeletstats <- fake kubelet                      --> :8889 <- Prometheus
                       ^ k8sattributes <- fake API server (this node's pods)
                       ^ loadbalancing's k8s resolver <- fake API server (the gateway's
                       |                                 headless service's EndpointSlice)
                       ^ resourcedetection <- fake EC2 instance metadata (sluice-fake-imds)

Each shipped file runs as it is, with a second --config merged over it (as the Collector merges
files) that changes only what a loopback test must: listeners on free ports, the gateway
addresses (for traces: the loadbalancing exporter's k8s resolver finds the gateway's ready
address, 127.0.0.1, in its headless service's EndpointSlice; the ring's backend is that address
with the gateway's OTLP port, as in a Collector agent's ring, and it is connected on the
gateway's `flight` port), the fake kubelet's address, shorter intervals and waits, and one more:
k8sattributes authenticates with `kubeConfig` (the fake API server's kubeconfig) instead of the
pod's service account, because `serviceAccount` means `KUBERNETES_SERVICE_HOST` and the fixed
mount `/var/run/secrets/kubernetes.io/serviceaccount`. The service-account path is exercised by
kubeletstats, whose token and CA directory tests may move (SLUICE_SERVICE_ACCOUNT_DIR).

The cluster: node `ip-10-0-1-17.ec2.internal` (the kubelet fixture's node) runs the Deployment
`checkout`'s pod with IP 127.0.0.1 — the address the SDK connects from —, the static pod
`kube-scheduler-...` and a finished Job's pod; another node's pod with the same IP must never be
watched. The gateway's headless service `otel-gateway-collector-headless` in the agent's
namespace `telemetry` (the service account's `namespace` file) has one ready endpoint, the
gateway. Shown:
- every span the SDK sent reaches the gateway, routed by the loadbalancing exporter over Arrow
  Flight to the endpoint the EndpointSlice names, and leaves its exporter with the Collector's `k8s.*`
  attributes of the checkout pod, `service.instance.id` (the pod's name, from the
  `resource` processor) and the node's cloud attributes (`resourcedetection`'s ec2 detector
  against the fake IMDS; eks finds nothing off Kubernetes);
- the kubelet's container, pod and node metrics reach Prometheus through the gateway with
  their resource attributes as labels, the checkout pod's also with its Deployment (found by
  uid), and the PromQL of the reference's dashboards answers;
- the agent watched only its node's pods.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import REPO_ROOT, free_port
from fake_kubelet import FakeKubelet
from otlp_sink import OtlpSink
from test_gateway_config import GATEWAY, gateway_overrides
from test_k8sattributes import FakeCluster
from test_kubeletstats import wait_for
from test_prometheus import PROMETHEUS, PROMTOOL, Prometheus
from test_resourcedetection import EC2_ATTRIBUTES, fake_imds
from test_tls import make_pki

AGENT = REPO_ROOT / "k8s" / "config" / "agent.yaml"
SUMMARY = REPO_ROOT / "k8s" / "testdata" / "kubeletstats" / "stats-summary.json"

NODE = "ip-10-0-1-17.ec2.internal"  # the node of the kubelet's stats summary
CHECKOUT_POD = "checkout-7d8f9c5b6-a1b2c"
CHECKOUT_UID = "42ad382b-ed0b-446d-9aab-3fdce8b4f9e2"
SCHEDULER_POD = "kube-scheduler-ip-10-0-1-17"
SCHEDULER_UID = "5795d0c442cb997ff93c49feeb9f6386"
STARTED = "2026-12-06T08:15:00Z"
NAMESPACE = "telemetry"  # the agent's and the gateway's

CLUSTER = [
    {"apiVersion": "apps/v1", "kind": "ReplicaSet",
     "metadata": {"name": "checkout-7d8f9c5b6", "namespace": "shop", "uid": "rs-checkout",
                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "checkout", "uid": "deploy-checkout",
                                       "controller": True}]}},
    # The application pod: the SDK's connections come from its IP.
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": CHECKOUT_POD, "namespace": "shop", "uid": CHECKOUT_UID,
                  "creationTimestamp": STARTED,
                  "labels": {"app.kubernetes.io/name": "checkout",
                             "pod-template-hash": "7d8f9c5b6"},
                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                       "name": "checkout-7d8f9c5b6", "uid": "rs-checkout",
                                       "controller": True}]},
     "spec": {"nodeName": NODE,
              "containers": [{"name": "server", "image": "shop/checkout:2.1"},
                             {"name": "istio-proxy", "image": "istio/proxyv2:1.22.1"}]},
     "status": {"podIP": "127.0.0.1", "startTime": STARTED,
                "containerStatuses": [
                    {"name": "server", "containerID": "containerd://c0ffee01",
                     "image": "shop/checkout:2.1", "imageID": "", "ready": True,
                     "restartCount": 0},
                    {"name": "istio-proxy", "containerID": "containerd://c0ffee02",
                     "image": "istio/proxyv2:1.22.1", "imageID": "", "ready": True,
                     "restartCount": 0}]}},
    # A static pod on the host network: found by uid (kubeletstats), never by IP.
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": SCHEDULER_POD, "namespace": "kube-system", "uid": SCHEDULER_UID,
                  "creationTimestamp": "2026-12-01T00:00:00Z"},
     "spec": {"nodeName": NODE, "hostNetwork": True,
              "containers": [{"name": "kube-scheduler",
                              "image": "registry.k8s.io/kube-scheduler:v1.31.2"}]},
     "status": {"podIP": "10.0.1.17", "startTime": "2026-12-01T00:00:00Z"}},
    # A CronJob's finished pod: no IP any more, still in the kubelet's summary.
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "nightly-report-28571230-q8zkx", "namespace": "jobs",
                  "uid": "0adffe8e-9849-4e05-b4cd-92d2d1e1f1c3",
                  "creationTimestamp": "2026-12-06T02:00:00Z",
                  "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                       "name": "nightly-report-28571230", "uid": "job-1",
                                       "controller": True}]},
     "spec": {"nodeName": NODE,
              "containers": [{"name": "report", "image": "jobs/report:5"}]},
     "status": {"phase": "Succeeded", "startTime": "2026-12-06T02:00:00Z"}},
    # Another node's pod, claiming the SDK's address: not this agent's business.
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "impostor-1", "namespace": "shop", "uid": "uid-elsewhere",
                  "creationTimestamp": "2026-12-06T09:00:00Z"},
     "spec": {"nodeName": "ip-10-0-2-99.ec2.internal",
              "containers": [{"name": "app", "image": "shop/impostor:1"}]},
     "status": {"podIP": "127.0.0.1", "startTime": "2026-12-06T09:00:00Z"}},
    # The gateway StatefulSet's headless service: its one ready pod is the test's gateway.
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "otel-gateway-collector-headless-8xk2q", "namespace": NAMESPACE,
                  "labels": {"kubernetes.io/service-name": "otel-gateway-collector-headless"}},
     "addressType": "IPv4",
     "ports": [{"name": "flight", "port": 4319, "protocol": "TCP"}],
     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True},
                    "hostname": "otel-gateway-collector-0"}]},
    # Another namespace's service of the same name: not the agent's gateway.
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "otel-gateway-collector-headless-zz9zz", "namespace": "other",
                  "labels": {"kubernetes.io/service-name": "otel-gateway-collector-headless"}},
     "addressType": "IPv4",
     "endpoints": [{"addresses": ["127.0.0.9"], "conditions": {"ready": True}}]},
]

# What k8sattributes (agent.yaml's extract.metadata) and resource add to the checkout pod's
# data. No container attributes on spans: the pod has two containers and the SDK's resource
# names none.
CHECKOUT_ATTRIBUTES = {
    "k8s.namespace.name": "shop",
    "k8s.pod.name": CHECKOUT_POD,
    "k8s.pod.uid": CHECKOUT_UID,
    "k8s.pod.start_time": STARTED,
    "k8s.deployment.name": "checkout",
    "k8s.node.name": NODE,
    "service.instance.id": CHECKOUT_POD,
}


@pytest.fixture
def cluster(tmp_path):
    c = FakeCluster(tmp_path, CLUSTER)
    yield c
    c.stop()


def agent_overrides(gateway_endpoint: str, gateway_flight_port: int,
                    kubelet_endpoint: str) -> dict:
    gateway_otlp_port = int(gateway_endpoint.rsplit(":", 1)[1])
    return {
        "receivers": {
            "otlp": {"protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
                "http": {"endpoint": f"127.0.0.1:{free_port()}"},
            }},
            "kubeletstats": {"endpoint": f"https://{kubelet_endpoint}",
                             "collection_interval": "1s", "initial_delay": "0s"},
        },
        "processors": {"k8sattributes": {"auth_type": "kubeConfig"},
                       "batch": {"timeout": "100ms"}},
        "exporters": {
            "loadbalancing": {"protocol": {"flight": {"port": gateway_flight_port}},
                              "resolver": {"k8s": {"ports": [gateway_otlp_port]}}},
            "otlp/gateway": {"endpoint": gateway_endpoint},
        },
    }


def send_traces(endpoint: str, run_id: str, traces: int, spans_per_trace: int) -> None:
    """`traces` traces of `spans_per_trace` spans from a service that names no pod. Every
    root span fails, so the gateway's tail_sampling keeps every trace (its `errors` policy):
    what reaches the sink is all that was sent."""
    provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=5),
        max_export_batch_size=64, schedule_delay_millis=100))
    tracer = provider.get_tracer("e2e.agent")
    for t in range(traces):
        with tracer.start_as_current_span(f"POST /checkout/{t}", kind=SpanKind.SERVER) as root:
            root.set_attribute("run.id", run_id)
            for i in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"step-{i}") as child:
                    child.set_attribute("run.id", run_id)
            root.set_status(Status(StatusCode.ERROR, "payment declined"))
    provider.force_flush()
    provider.shutdown()


def test_agent_and_gateway_as_shipped(sluice, tmp_path, cluster, monkeypatch):
    if not (Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()):
        pytest.fail("prometheus/promtool missing: run scripts/setup-test-env.sh")
    with fake_imds("v2") as imds:
        # The node's instance metadata, where resourcedetection's ec2 detector looks for it.
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        run_agent_and_gateway(sluice, tmp_path, cluster, monkeypatch)


def run_agent_and_gateway(sluice, tmp_path, cluster, monkeypatch):
    pki = make_pki(tmp_path)
    service_account = tmp_path / "serviceaccount"
    service_account.mkdir()
    shutil.copy(pki / "ca.crt", service_account / "ca.crt")
    (service_account / "token").write_text("agent-token\n")
    (service_account / "namespace").write_text(NAMESPACE)
    kubelet = FakeKubelet(pki / "server.crt", pki / "server.key", SUMMARY, "agent-token").start()
    jaeger = OtlpSink().start()
    prom = None
    try:
        monkeypatch.setenv("JAEGER_ENDPOINT", jaeger.grpc_endpoint)
        gateway = sluice(gateway_overrides(jaeger.grpc_endpoint), name="gateway", base=GATEWAY)

        # The pod spec's downward API, the fake cluster's kubeconfig, the service account.
        monkeypatch.setenv("K8S_NODE_NAME", NODE)
        monkeypatch.setenv("K8S_POD_NAME", "otel-agent-collector-x7k2p")
        monkeypatch.setenv("KUBECONFIG", cluster.info["kubeconfig"])
        monkeypatch.setenv("SLUICE_SERVICE_ACCOUNT_DIR", str(service_account))
        flight_port = int(gateway.config["receivers"]["flight"]["endpoint"].rsplit(":", 1)[1])
        agent = sluice(agent_overrides(gateway.grpc_endpoint, flight_port, kubelet.endpoint),
                       name="agent", base=AGENT)
        gateway_prometheus = gateway.config["exporters"]["prometheus"]["endpoint"]
        gateway_telemetry = gateway.metrics_url.removeprefix("http://").removesuffix("/metrics")
        prom = Prometheus(tmp_path, {"otel-gateway": gateway_prometheus,
                                     "otel-gateway-telemetry": gateway_telemetry})

        # Ready means this node's pods are known (wait_for_metadata): nothing is sent, scraped
        # or exported unlabelled (the kubelet is scraped at once: initial_delay 0s).
        assert agent.metric("otelcol_otelsvc_k8s_pod_added_total") == 3

        # -- traces: the SDK -> agent -> gateway -> "Jaeger"
        run_id = uuid.uuid4().hex
        traces, per_trace = 20, 4

        def ours():
            return [s for s in jaeger.spans() if s["attributes"].get("run.id") == run_id]

        send_traces(agent.grpc_endpoint, run_id, traces, per_trace)
        assert jaeger.wait_for(lambda _: len(ours()) >= traces * per_trace, timeout=20), \
            f"{len(ours())} of {traces * per_trace} spans arrived"
        spans = ours()
        assert len(spans) == traces * per_trace
        assert len({s["trace_id"] for s in spans}) == traces
        for s in spans:
            resource = s["resource"]
            assert resource.get("service.name") == "checkout"
            for key, want in {**CHECKOUT_ATTRIBUTES, **EC2_ATTRIBUTES}.items():
                assert resource.get(key) == want, (key, resource)
            # only the attributes sent and those the agent adds
            assert set(resource) <= {"service.name", "k8s.pod.ip", *CHECKOUT_ATTRIBUTES,
                                     *EC2_ATTRIBUTES}, resource
        # ... all through the one backend the gateway's EndpointSlice names (its ring key the
        # OTLP address, a Collector agent's), over Flight
        assert agent.metric("otelcol_loadbalancer_num_backends", resolver="k8s") == 1
        assert agent.metric("otelcol_exporter_sent_spans_total",
                            exporter=f"loadbalancing/{gateway.grpc_endpoint}") \
            == traces * per_trace
        assert gateway.metric("otelcol_receiver_accepted_spans_total", receiver="flight") \
            == traces * per_trace

        # -- kubelet metrics: agent -> gateway -> :8889 -> Prometheus
        checkout = f'k8s_pod_name="{CHECKOUT_POD}",k8s_container_name="server"'
        wait_for(lambda: prom.query(f"container_cpu_time_seconds_total{{{checkout}}}"), 30,
                 "the checkout container's CPU time in Prometheus")
        series = prom.query(f"container_cpu_time_seconds_total{{{checkout}}}")[0]["metric"]
        # kubeletstats' own attributes, and what k8sattributes found for the pod by its uid
        assert series["k8s_namespace_name"] == "shop"
        assert series["k8s_pod_uid"] == CHECKOUT_UID
        assert series["k8s_node_name"] == NODE
        assert series["k8s_deployment_name"] == "checkout"
        assert series["k8s_pod_start_time"] == STARTED
        assert series["container_image_name"] == "shop/checkout"
        assert series["container_image_tag"] == "2.1"
        assert series["service_instance_id"] == CHECKOUT_POD
        assert series["cloud_region"] == EC2_ATTRIBUTES["cloud.region"]
        assert series["host_name"] == EC2_ATTRIBUTES["host.name"]
        assert series["instance"] == gateway_prometheus
        # a static pod: k8s attributes by uid, no deployment
        scheduler = prom.query(f'container_cpu_time_seconds_total{{k8s_pod_name="{SCHEDULER_POD}"}}')
        assert scheduler and "k8s_deployment_name" not in scheduler[0]["metric"]
        assert scheduler[0]["metric"]["container_image_name"] == "registry.k8s.io/kube-scheduler"

        # The reference's PromQL (metrics-pipeline §10): memory per pod of a namespace, which
        # gateway pod serves which node, node metrics, spans received per gateway pod.
        rss = prom.query('container_memory_rss_bytes{k8s_namespace_name="shop"}')
        assert {r["metric"]["k8s_container_name"]: float(r["value"][1]) for r in rss} == {
            "server": 23523328, "istio-proxy": 41000000}  # the summary's rssBytes
        groups = prom.query("group by (instance, k8s_node_name) (container_cpu_time_seconds_total)")
        assert [g["metric"] for g in groups] == [
            {"instance": gateway_prometheus, "k8s_node_name": NODE}], \
            prom.query('container_cpu_time_seconds_total{k8s_node_name=""}')
        assert prom.value(f'k8s_node_memory_working_set_bytes{{k8s_node_name="{NODE}"}}') \
            == 1334567890
        received = wait_for(lambda: prom.query(
            "sum by (instance) (rate(otelcol_receiver_accepted_spans_total[5m]))"), 20,
            "spans received per gateway pod")
        assert [r["metric"] for r in received] == [{"instance": gateway_telemetry}]
        assert prom.value(f'sum(otelcol_receiver_accepted_spans_total{{instance="{gateway_telemetry}",'
                          f'receiver="flight"}})') == traces * per_trace

        # -- the agent watched this node's pods only, and found the application's pod; its
        # resolver watched the gateway service's slices in its own namespace
        pod_lists = [r for r in cluster.control("GET", "/requests")
                     if r["path"] == "/api/v1/pods"]
        assert pod_lists and all(r["query"].get("fieldSelector") == f"spec.nodeName={NODE}"
                                 for r in pod_lists), pod_lists
        slices = [r for r in cluster.control("GET", "/requests") if "endpointslices" in r["path"]]
        assert slices and all(
            r["path"] == f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
            and r["query"].get("labelSelector")
            == "kubernetes.io/service-name=otel-gateway-collector-headless"
            for r in slices), slices
        assert all(auth == "Bearer agent-token" for _, auth in kubelet.seen())
        assert agent.metric("otelcol_receiver_accepted_metric_points_total",
                            receiver="kubeletstats") > 0
    finally:
        if prom:
            prom.stop()
        kubelet.stop()
        jaeger.stop()

