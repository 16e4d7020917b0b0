"""The agent's pod enrichment end to end: the real OpenTelemetry Python SDK -> sluice with
`k8sattributes` (kubeConfig auth, this node's pods, association by the connection's IP) ->
OTLP sink, against the fake Kubernetes API server run as a process
(`sluice-fake-apiserver`: TLS, bearer token, list + watch). The SDK connects from 127.0.0.1,
which the fake cluster says is the IP of a Deployment's pod on node `n1`: that pod's metadata
must arrive on the spans' resource. Then the cluster changes while data flows: the pod is
replaced by a newer pod with the same IP, and the next spans carry the new pod."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import REPO_ROOT, otlp_receiver, pipelines, sluice_bin


def fake_apiserver_bin() -> Path:
    """`sluice-fake-apiserver`, built beside the sluice binary (scripts/test.sh builds it):
    `FAKE_APISERVER_BIN` overrides."""
    p = os.environ.get("FAKE_APISERVER_BIN")
    if p:
        return Path(p) if Path(p).is_absolute() else REPO_ROOT / p
    return sluice_bin().parent / "sluice-fake-apiserver"


def pod(name: str, uid: str, ip: str, started: str, node: str = "n1") -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "uid": uid,
            "creationTimestamp": started,
            "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f6c5b8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "checkout-7d9f6c5b8", "uid": "rs-1",
                                 "controller": True}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "shop/checkout:2.1"}]},
        "status": {"podIP": ip, "startTime": started,
                   "containerStatuses": [{"name": "app", "containerID": f"containerd://{uid}",
                                          "image": "shop/checkout:2.1", "imageID": "",
                                          "ready": True, "restartCount": 0}]},
    }


REPLICASET = {
    "apiVersion": "apps/v1", "kind": "ReplicaSet",
    "metadata": {"name": "checkout-7d9f6c5b8", "namespace": "shop", "uid": "rs-1",
                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "checkout-deploy", "uid": "d-1",
                                      "controller": True}]},
}


class FakeCluster:
    def __init__(self, tmp: Path, objects: list[dict]):
        binary = fake_apiserver_bin()
        if not binary.exists():
            pytest.fail(f"{binary} not found: cargo build -p sluice-k8s --features testing "
                        f"--bin sluice-fake-apiserver (scripts/test.sh does)")
        objects_file = tmp / "cluster.json"
        objects_file.write_text(json.dumps({"kind": "List", "items": objects}))
        self.log = open(tmp / "fake-apiserver.log", "wb")
        self.proc = subprocess.Popen([str(binary), "--objects", str(objects_file)],
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"the fake API server did not start: {(tmp / 'fake-apiserver.log').read_text()}")
        self.info = json.loads(line)

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.info["control"] + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
            return json.loads(text) if text.startswith("{") or text.startswith("[") else {}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def cluster(tmp_path):
    c = FakeCluster(tmp_path, [REPLICASET,
                               pod("checkout-7d9f6c5b8-aaaaa", "uid-old", "127.0.0.1",
                                   "2026-01-01T10:00:00Z"),
                               pod("elsewhere-1", "uid-n2", "127.0.0.2",
                                   "2026-01-01T10:00:00Z", node="n2")])
    yield c
    c.stop()


def send_spans(endpoint: str, run_id: str, n: int) -> None:
    provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True,
                                             timeout=5)))
    tracer = provider.get_tracer("e2e.k8sattributes")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}") as span:
            span.set_attribute("run.id", run_id)
    provider.shutdown()


def test_sdk_spans_get_their_pods_metadata_from_the_fake_cluster(sluice, sink, cluster,
                                                                 monkeypatch):
    monkeypatch.setenv("KUBECONFIG", cluster.info["kubeconfig"])
    monkeypatch.setenv("KUBE_NODE_NAME", "n1")
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "processors": {
            "k8sattributes": {
                "auth_type": "kubeConfig",
                "filter": {"node_from_env_var": "KUBE_NODE_NAME"},
                "wait_for_metadata": True,
                "pod_association": [{"sources": [{"from": "connection"}]}],
                "extract": {"metadata": ["k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid",
                                         "k8s.deployment.name", "k8s.node.name",
                                         "container.image.name", "container.image.tag"],
                            "labels": [{"tag_name": "app", "key": "app.kubernetes.io/name"}]},
            },
            "batch": {"timeout": "100ms"},
        },
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["k8sattributes", "batch"], ["otlp"],
                                           signals=["traces"])},
    })
    run_id = uuid.uuid4().hex

    def ours(k):
        return [sp for sp in k.spans() if sp["attributes"].get("run.id") == run_id]

    send_spans(s.grpc_endpoint, run_id, 3)
    assert sink.wait_for(lambda k: len(ours(k)) == 3, timeout=15), sink.spans()
    for sp in ours(sink):
        assert sp["resource"] == {
            "service.name": "checkout",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": "checkout-7d9f6c5b8-aaaaa",
            "k8s.pod.uid": "uid-old",
            "k8s.deployment.name": "checkout-deploy",
            "k8s.node.name": "n1",
            "container.image.name": "shop/checkout",
            "container.image.tag": "2.1",
            "app": "checkout",
        }, sp["resource"]
    # Only node n1's pods were asked for.
    pods = [r for r in cluster.control("GET", "/requests") if r["path"] == "/api/v1/pods"]
    assert pods and all(r["query"].get("fieldSelector") == "spec.nodeName=n1" for r in pods)

    # The pod is replaced: a newer pod gets the same IP while data flows.
    cluster.control("DELETE", "/objects", pod("checkout-7d9f6c5b8-aaaaa", "uid-old",
                                              "127.0.0.1", "2026-01-01T10:00:00Z"))
    cluster.control("POST", "/objects", pod("checkout-7d9f6c5b8-bbbbb", "uid-new", "127.0.0.1",
                                            "2026-01-01T11:00:00Z"))
    deadline = time.monotonic() + 20
    while True:
        sink.clear()
        run_id = uuid.uuid4().hex
        send_spans(s.grpc_endpoint, run_id, 1)
        assert sink.wait_for(lambda k: len(ours(k)) == 1, timeout=15), sink.spans()
        if ours(sink)[0]["resource"].get("k8s.pod.name") == "checkout-7d9f6c5b8-bbbbb":
            assert ours(sink)[0]["resource"]["k8s.pod.uid"] == "uid-new"
            break
        assert time.monotonic() < deadline, ours(sink)
        time.sleep(0.2)
    assert s.wait_metric("otelcol_otelsvc_k8s_pod_added_total", lambda v: v and v >= 2) >= 2
    assert s.metric("otelcol_otelsvc_k8s_pod_deleted_total") >= 1
