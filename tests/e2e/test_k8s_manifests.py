"""The Kubernetes manifests in k8s/ as a cluster would take them, without a cluster.

Every kustomization is rendered with `kubectl kustomize` (offline), then:

- every built-in object is validated, strictly (unknown fields are errors), against the
  OpenAPI schema of Kubernetes 1.37 (PyPI kubernetes-validate; 1.37 is the API version the
  `k8s-openapi` feature in Cargo.toml names); ServiceMonitor and OpenTelemetryCollector against
  their projects' published CRD schemas (tests/e2e/k8s_schemas/);
- the discovery chain of the reference deployment is computed as the Prometheus Operator and
  Kubernetes compute it: Prometheus CR `serviceMonitorSelector` -> ServiceMonitors -> Services
  by label -> the Service's Endpoints (pods its selector matches, the named port resolved to a
  container port) -> scrape targets. Production's 2 gateway pods give exactly 2 targets on
  :8889; the ServiceMonitor selector of the original bug (without `collector-service-type`)
  gives 4;
- the agent's `loadbalancing` resolver names the gateway's headless service and its metrics
  exporter the base service; every port a config binds is declared on the pod (and served by
  the right service), every `${env:...}` a config reads is set on the pod, and every container
  has the memory limit `memory_limiter`'s `limit_percentage` is a share of;
- the plain manifests are named and labelled as the Operator names and labels what it
  generates from k8s/operator/;
- the configs embedded in k8s/operator/ and copied in k8s/base/ are k8s/config/*.yaml, and
  `sluice validate` accepts them.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REPO_ROOT, run_sluice

K8S = REPO_ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "k8s_schemas"
KUBERNETES_VERSION = "1.37"
KUSTOMIZATIONS = ["base", "operator", "overlays/dev", "overlays/production"]
NAMESPACE = "telemetry"

# The Prometheus CR that kube-prometheus-stack's Helm chart installs (its defaults): only
# ServiceMonitors labelled release=<release name> are read, from every namespace.
PROMETHEUS_CR = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "Prometheus",
    "metadata": {"name": "kube-prometheus-stack-prometheus", "namespace": "monitoring"},
    "spec": {
        "serviceMonitorSelector": {"matchLabels": {"release": "kube-prometheus-stack"}},
        "serviceMonitorNamespaceSelector": {},
    },
}

# The components whose config the agent file uses and that may not be built in yet (they are
# being added to sluice one by one): `sluice validate` may refuse agent.yaml for these only.
AGENT_COMPONENTS = {
    ("receiver", "kubeletstats"), ("processor", "k8sattributes"),
    ("processor", "resourcedetection"), ("exporter", "loadbalancing"),
}


@pytest.fixture(scope="module", autouse=True)
def _kubectl():
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH (scripts/setup-test-env.sh installs it)")


@functools.cache
def render(kustomization: str) -> tuple[dict, ...]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / kustomization)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize k8s/{kustomization}:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def objects(kustomization: str, kind: str) -> list[dict]:
    return [o for o in render(kustomization) if o["kind"] == kind]


def named(kustomization: str, kind: str, name: str) -> dict:
    found = [o for o in objects(kustomization, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"k8s/{kustomization}: {len(found)} {kind} named {name}"
    return found[0]


def config_text(role: str) -> str:
    return (K8S / "config" / f"{role}.yaml").read_text()


# ------------------------------------------------------------------------ schema validation


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_builtin_objects_match_kubernetes_schema(kustomization):
    checked = set()
    for obj in render(kustomization):
        if obj["kind"] in CRD_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"k8s/{kustomization}: {obj['kind']} {obj['metadata']['name']}: "
                        f"{e.caught.message} at {list(e.caught.absolute_path)}", pytrace=False)
        checked.add(obj["kind"])
    plain = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
             "Service", "DaemonSet", "StatefulSet", "PodDisruptionBudget"}
    assert checked == (plain if kustomization != "operator" else {"ClusterRole", "ClusterRoleBinding"})


def test_kubernetes_schema_validation_is_strict():
    """The check above refuses a misspelt field (it would catch a typo in the manifests)."""
    svc = copy.deepcopy(named("base", "Service", "otel-gateway-collector-headless"))
    svc["spec"]["clusterIp"] = svc["spec"].pop("clusterIP")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, KUBERNETES_VERSION, strict=True)


def crd_to_json_schema(node: dict) -> dict:
    """A CRD's structural OpenAPI v3 schema as JSON Schema, as the API server applies it with
    strict field validation: an object's unknown fields are errors unless the schema preserves
    them. `x-sluice-omitted` marks a subtree the excerpt leaves out: nothing may be there."""
    if node.get("x-sluice-omitted"):
        return {"not": {}, "$comment": "omitted from the schema excerpt"}
    out = {k: v for k, v in node.items()
           if not k.startswith("x-") and k not in ("properties", "items", "additionalProperties",
                                                    "anyOf", "default", "format")}
    if "properties" in node:
        out["properties"] = {k: crd_to_json_schema(v) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = crd_to_json_schema(node["items"])
    if "anyOf" in node:
        out["anyOf"] = [crd_to_json_schema(v) for v in node["anyOf"]]
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = crd_to_json_schema(node["additionalProperties"])
    elif "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


CRD_SCHEMAS = {
    "ServiceMonitor": ("monitoring.coreos.com/v1", "servicemonitor-v1.yaml"),
    "OpenTelemetryCollector": ("opentelemetry.io/v1beta1", "opentelemetrycollector-v1beta1.yaml"),
}


def crd_errors(obj: dict) -> list[str]:
    api_version, file = CRD_SCHEMAS[obj["kind"]]
    assert obj["apiVersion"] == api_version, f"{obj['kind']} {obj['apiVersion']}"
    schema = crd_to_json_schema(yaml.safe_load((SCHEMAS / file).read_text()))
    errors = []
    for e in jsonschema.Draft202012Validator(schema).iter_errors(obj):
        where = "/".join(str(p) for p in e.absolute_path)
        if e.schema.get("$comment") == "omitted from the schema excerpt":
            errors.append(f"{where}: not in the schema excerpt {file}: copy its published "
                          f"schema in (k8s_schemas/README.md)")
        else:
            errors.append(f"{where}: {e.message}")
    return errors


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_custom_resources_match_published_crd_schemas(kustomization):
    custom = [o for o in render(kustomization) if o["kind"] in CRD_SCHEMAS]
    assert custom, f"k8s/{kustomization} renders no custom resource"
    for obj in custom:
        assert not crd_errors(obj), f"{obj['kind']} {obj['metadata']['name']}: {crd_errors(obj)}"


def test_crd_validation_refuses_what_the_api_server_would():
    sm = copy.deepcopy(named("base", "ServiceMonitor", "otel-gateway"))
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any("intervall" in e for e in crd_errors(sm))
    sm = copy.deepcopy(named("base", "ServiceMonitor", "otel-gateway"))
    sm["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert crd_errors(sm)
    col = copy.deepcopy(named("operator", "OpenTelemetryCollector", "otel-agent"))
    col["spec"]["mode"] = "DaemonSet"
    assert any("mode" in e for e in crd_errors(col))
    col = copy.deepcopy(named("operator", "OpenTelemetryCollector", "otel-agent"))
    del col["spec"]["config"]["exporters"]
    assert any("exporters" in e for e in crd_errors(col))
    col = copy.deepcopy(named("operator", "OpenTelemetryCollector", "otel-agent"))
    col["spec"]["volumes"] = [{"name": "x", "emptyDir": {}}]
    assert any("not in the schema excerpt" in e for e in crd_errors(col))


# ------------------------------------------------------------------------ the discovery chain


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector: matchLabels and matchExpressions, ANDed; {} matches all."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pods(objs) -> list[dict]:
    """The pods the workloads make: StatefulSet <name>-<ordinal>, DaemonSet one per node of a
    three-node cluster. Pod IPs are made up, one per pod."""
    made = []
    for o in objs:
        tpl = o.get("spec", {}).get("template")
        if o["kind"] == "StatefulSet":
            names = [f"{o['metadata']['name']}-{i}" for i in range(o["spec"].get("replicas", 1))]
        elif o["kind"] == "DaemonSet":
            names = [f"{o['metadata']['name']}-node{i}" for i in range(3)]
        else:
            continue
        for name in names:
            made.append({"name": name, "namespace": o["metadata"].get("namespace", NAMESPACE),
                         "labels": tpl["metadata"]["labels"], "spec": tpl["spec"],
                         "ip": f"10.0.0.{len(made) + 1}"})
    return made


def container_port(pod: dict, target) -> int | None:
    """A Service's targetPort on a pod: a number, or the name of a container port."""
    if isinstance(target, int):
        return target
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            if p.get("name") == target:
                return p["containerPort"]
    return None  # a named targetPort the pod lacks: no endpoint


def scrape_targets(objs, prometheus: dict = PROMETHEUS_CR) -> list[tuple[str, str, int]]:
    """(service, pod, port) for every target Prometheus would scrape."""
    spec = prometheus["spec"]
    all_pods = pods(objs)
    targets = []
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        if not selector_matches(spec.get("serviceMonitorSelector"), sm["metadata"].get("labels", {})):
            continue
        sm_ns = sm["metadata"].get("namespace", NAMESPACE)
        ns_sel = sm["spec"].get("namespaceSelector") or {}
        for svc in (o for o in objs if o["kind"] == "Service"):
            svc_ns = svc["metadata"].get("namespace", NAMESPACE)
            if not (ns_sel.get("any") or svc_ns in (ns_sel.get("matchNames") or [sm_ns])):
                continue
            if not selector_matches(sm["spec"]["selector"], svc["metadata"].get("labels", {})):
                continue
            selected = [p for p in all_pods if p["namespace"] == svc_ns
                        and svc["spec"].get("selector")
                        and selector_matches({"matchLabels": svc["spec"]["selector"]}, p["labels"])]
            for ep in sm["spec"]["endpoints"]:
                ports = [p for p in svc["spec"]["ports"] if p.get("name") == ep.get("port")]
                for sp in ports:
                    for pod in selected:
                        port = container_port(pod, sp.get("targetPort", sp["port"]))
                        if port is not None:
                            targets.append((svc["metadata"]["name"], pod["name"], port))
    return targets


def test_prometheus_scrapes_each_gateway_pod_once_on_8889():
    objs = render("overlays/production")
    assert named("overlays/production", "StatefulSet", "otel-gateway-collector")["spec"]["replicas"] == 2
    targets = scrape_targets(objs)
    assert sorted(targets) == [
        ("otel-gateway-collector-headless", "otel-gateway-collector-0", 8889),
        ("otel-gateway-collector-headless", "otel-gateway-collector-1", 8889),
    ]
    # and 8889 is where the gateway's prometheus exporter listens
    cfg = yaml.safe_load(config_text("gateway"))
    assert cfg["exporters"]["prometheus"]["endpoint"].endswith(":8889")


def test_the_selector_without_service_type_scrapes_every_pod_twice():
    """§7 of the reference deployment: name + managed-by match the base and the headless
    service, both with both pods behind them: 4 targets, every series stored twice."""
    objs = [copy.deepcopy(o) for o in render("overlays/production")]
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        del sm["spec"]["selector"]["matchLabels"]["operator.opentelemetry.io/collector-service-type"]
    targets = scrape_targets(objs)
    assert len(targets) == 4
    assert {t[0] for t in targets} == {"otel-gateway-collector", "otel-gateway-collector-headless"}
    assert {(t[1], t[2]) for t in targets} == {("otel-gateway-collector-0", 8889),
                                               ("otel-gateway-collector-1", 8889)}


def test_a_service_monitor_without_the_release_label_is_ignored():
    objs = [copy.deepcopy(o) for o in render("overlays/production")]
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        sm["metadata"]["labels"].pop("release")
    assert scrape_targets(objs) == []


def test_dev_has_one_gateway_and_one_target():
    assert [t[1] for t in scrape_targets(render("overlays/dev"))] == ["otel-gateway-collector-0"]


# ------------------------------------------------------------------------ agent -> gateway wiring


def workload_configs(kustomization: str, workload: dict) -> dict:
    """The collector config a workload's container runs: its --config files from the mounted
    ConfigMap, merged in order as the Collector merges them (maps merge, the rest replaces)."""
    c = workload["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    merged: dict = {}
    for arg in c["args"]:
        m = re.fullmatch(r"--config=(?:file:)?(/[^/]+)/([^/]+)", arg)
        assert m, f"{workload['metadata']['name']}: unexpected argument {arg}"
        cm_name = volumes[mounts[m.group(1)]]["configMap"]["name"]
        cm = named(kustomization, "ConfigMap", cm_name)
        merged = deep_merge(merged, yaml.safe_load(cm["data"][m.group(2)]))
    return merged


def deep_merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = deep_merge(a[k], v) if k in a else v
        return out
    return b


def gateway_pods(objs) -> list[dict]:
    return [p for p in pods(objs) if p["labels"]["app.kubernetes.io/instance"].endswith(".otel-gateway")]


def service_named(objs, reference: str) -> dict:
    """The Service a name reaches from a pod in the namespace: name, name.ns, name.ns.svc[...]."""
    parts = reference.split(".")
    name, ns = parts[0], parts[1] if len(parts) > 1 else NAMESPACE
    found = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == name
             and o["metadata"].get("namespace") == ns]
    assert len(found) == 1, f"no Service {name} in {ns} for {reference!r}"
    return found[0]


@pytest.mark.parametrize("kustomization", ["base", "overlays/production", "overlays/dev"])
def test_agent_routes_traces_over_the_headless_service_and_metrics_over_the_base_service(kustomization):
    objs = render(kustomization)
    agent = workload_configs(kustomization, named(kustomization, "DaemonSet", "otel-agent-collector"))
    gateways = {p["name"] for p in gateway_pods(objs)}

    lb = agent["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    headless = service_named(objs, lb["resolver"]["k8s"]["service"])
    assert headless["spec"].get("clusterIP") == "None"
    assert headless["metadata"]["labels"]["operator.opentelemetry.io/collector-service-type"] == "headless"
    behind = {p["name"] for p in pods(objs)
              if selector_matches({"matchLabels": headless["spec"]["selector"]}, p["labels"])}
    assert behind == gateways
    headless_ports = {p["port"] for p in headless["spec"]["ports"]}
    assert set(lb["resolver"]["k8s"].get("ports", [4317])) <= headless_ports
    # protocol.flight connects each backend on `port` (the gateway's flight receiver)
    for protocol in lb["protocol"].values():
        if "port" in protocol:
            assert protocol["port"] in headless_ports
    assert agent["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]

    host, port = agent["exporters"]["otlp/gateway"]["endpoint"].rsplit(":", 1)
    base = service_named(objs, host)
    assert base["spec"].get("clusterIP") != "None"
    assert base["metadata"]["labels"]["operator.opentelemetry.io/collector-service-type"] == "base"
    assert {p["name"] for p in pods(objs)
            if selector_matches({"matchLabels": base["spec"]["selector"]}, p["labels"])} == gateways
    assert int(port) in {p["port"] for p in base["spec"]["ports"]}
    for signal in ("metrics", "logs"):
        assert agent["service"]["pipelines"][signal]["exporters"] == ["otlp/gateway"]


def bound_ports(cfg: dict) -> dict[int, str]:
    """Every port a config listens on -> what listens there."""
    found: dict[int, str] = {}

    def add(endpoint: str, what: str):
        host, port = endpoint.rsplit(":", 1)
        assert host in ("0.0.0.0", "[::]", ""), \
            f"{what} listens on {endpoint}: not reachable from outside the pod"
        found[int(port)] = what

    for name, r in (cfg.get("receivers") or {}).items():
        for proto, p in ((r or {}).get("protocols") or {}).items():
            add(p["endpoint"], f"receivers.{name}.{proto}")
        if name.split("/")[0] == "flight":
            add(r["endpoint"], f"receivers.{name}")
    for name, e in (cfg.get("exporters") or {}).items():
        if name.split("/")[0] == "prometheus":
            add(e["endpoint"], f"exporters.{name}")
    for name, e in (cfg.get("extensions") or {}).items():
        if name.split("/")[0] == "health_check":
            add(e["endpoint"], f"extensions.{name}")
    add(cfg["service"]["telemetry"]["metrics"]["address"], "service.telemetry.metrics")
    return found


@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/production"])
@pytest.mark.parametrize("workload", [("DaemonSet", "otel-agent-collector"),
                                      ("StatefulSet", "otel-gateway-collector")])
def test_every_port_a_config_binds_is_declared_and_served(kustomization, workload):
    objs = render(kustomization)
    w = named(kustomization, *workload)
    cfg = workload_configs(kustomization, w)
    container = w["spec"]["template"]["spec"]["containers"][0]
    declared = {p["containerPort"]: p["name"] for p in container["ports"]}
    bound = bound_ports(cfg)
    assert set(bound) == set(declared), f"config binds {bound}, the pod declares {declared}"

    name = w["metadata"]["name"]
    services = {s["metadata"]["labels"]["operator.opentelemetry.io/collector-service-type"]: s
                for s in objs if s["kind"] == "Service" and s["metadata"]["name"].startswith(name)}
    assert set(services) == {"base", "headless", "monitoring"}
    clients = {port: what for port, what in bound.items()
               if what.startswith(("receivers.otlp", "receivers.flight", "exporters.prometheus"))}
    names = {"receivers.otlp.grpc": "otlp-grpc", "receivers.otlp.http": "otlp-http",
             "receivers.flight": "flight", "exporters.prometheus": "prometheus"}
    for kind in ("base", "headless"):
        ports = {p["port"]: p["name"] for p in services[kind]["spec"]["ports"]}
        assert ports == {port: names[what] for port, what in clients.items()}, kind
    telemetry = int(cfg["service"]["telemetry"]["metrics"]["address"].rsplit(":", 1)[1])
    assert [(p["name"], p["port"]) for p in services["monitoring"]["spec"]["ports"]] == \
        [("monitoring", telemetry)]

    health = int(cfg["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1])
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == health
        assert container[probe]["httpGet"]["path"] == cfg["extensions"]["health_check"].get("path", "/")


@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/production"])
def test_pods_set_what_configs_read_and_the_memory_limit_memory_limiter_reads(kustomization):
    for w in objects(kustomization, "DaemonSet") + objects(kustomization, "StatefulSet"):
        cfg_text = yaml.safe_dump(workload_configs(kustomization, w))
        container = w["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        for var in re.findall(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}", cfg_text):
            assert var in env, f"{w['metadata']['name']}: the config reads {var}, the pod does not set it"
        assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert env["K8S_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        cfg = workload_configs(kustomization, w)
        assert "limit_percentage" in cfg["processors"]["memory_limiter"]
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["memory"]
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 65532


def test_production_spreads_gateways_and_dev_prints_traces():
    prod = named("overlays/production", "StatefulSet", "otel-gateway-collector")
    spread = prod["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in spread] == \
        [("kubernetes.io/hostname", "DoNotSchedule")]
    assert named("overlays/production", "PodDisruptionBudget", "otel-gateway-collector")["spec"]["maxUnavailable"] == 1
    dev = named("overlays/dev", "StatefulSet", "otel-gateway-collector")
    assert dev["spec"]["replicas"] == 1
    cfg = workload_configs("overlays/dev", dev)
    assert cfg["service"]["pipelines"]["traces"]["exporters"] == ["debug"]
    prod_cfg = workload_configs("overlays/production", prod)
    assert prod_cfg["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]


# ------------------------------------------------------------------------ base == what the Operator generates


@pytest.mark.parametrize("collector", ["otel-agent", "otel-gateway"])
def test_plain_manifests_are_named_and_labelled_as_the_operator_generates_them(collector):
    """The Operator's naming (internal/naming) and labels (manifestutils.Labels, the service
    type labels) for an OpenTelemetryCollector `<name>` in namespace `telemetry`."""
    cr = named("operator", "OpenTelemetryCollector", collector)
    mode = cr["spec"]["mode"]
    name = f"{collector}-collector"
    selector = {
        "app.kubernetes.io/managed-by": "opentelemetry-operator",
        "app.kubernetes.io/instance": f"{NAMESPACE}.{collector}",
        "app.kubernetes.io/part-of": "opentelemetry",
        "app.kubernetes.io/component": "opentelemetry-collector",
    }
    kind = {"daemonset": "DaemonSet", "statefulset": "StatefulSet"}[mode]
    w = named("base", kind, name)
    assert w["spec"]["selector"]["matchLabels"] == selector
    assert w["metadata"]["labels"] == selector | {"app.kubernetes.io/name": name,
                                                  "app.kubernetes.io/version": "0.1.0"}
    assert w["spec"]["template"]["metadata"]["labels"] == w["metadata"]["labels"]
    if mode == "statefulset":
        assert w["spec"]["replicas"] == cr["spec"]["replicas"]
    container = w["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "otc-container"
    assert container["args"][0] == "--config=/conf/collector.yaml"
    assert w["spec"]["template"]["spec"]["serviceAccountName"] == name
    named("base", "ServiceAccount", name)
    cr_env = {e["name"]: e for e in cr["spec"]["env"]}
    pod_env = {e["name"]: e for e in container["env"]}
    assert pod_env.pop("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {k for k in pod_env} == set(cr_env)
    assert container["resources"] == cr["spec"]["resources"]

    for suffix, svc_type, extra in [("", "base", {}),
                                    ("-headless", "headless",
                                     {"operator.opentelemetry.io/collector-headless-service": "Exists"}),
                                    ("-monitoring", "monitoring",
                                     {"operator.opentelemetry.io/collector-monitoring-service": "Exists"})]:
        svc = named("base", "Service", name + suffix)
        assert svc["spec"]["selector"] == selector
        assert svc["metadata"]["labels"] == selector | extra | {
            "app.kubernetes.io/name": name if svc_type != "monitoring" else name + suffix,
            "app.kubernetes.io/version": "0.1.0",
            "operator.opentelemetry.io/collector-service-type": svc_type,
        }
    traffic = named("base", "Service", name)["spec"]["internalTrafficPolicy"]
    assert traffic == ("Local" if mode == "daemonset" else "Cluster")


# ------------------------------------------------------------------------ the configs


@pytest.mark.parametrize("role", ["agent", "gateway"])
def test_operator_and_base_carry_the_shipped_configs(role):
    text = config_text(role)
    assert (K8S / "base" / "config" / f"{role}.yaml").read_text() == text
    cr = named("operator", "OpenTelemetryCollector", f"otel-{role}")
    assert cr["spec"]["config"] == yaml.safe_load(text)
    # the operator file carries the text itself, comments included
    raw = (K8S / "operator" / f"otel-{role}.yaml").read_text()
    embedded = raw.split("\n  config:\n", 1)[1]
    assert "\n".join(line[4:] for line in embedded.split("\n")) == text
    cm = named("base", "ConfigMap", next(o["metadata"]["name"] for o in objects("base", "ConfigMap")
                                         if o["metadata"]["name"].startswith(f"otel-{role}-collector")))
    assert cm["data"]["collector.yaml"] == text
    check = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "k8s-sync.sh"), "--check"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def validate(*configs: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    args = ["validate"]
    for c in configs:
        args += ["--config", str(c)]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_sluice(args)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_sluice_validates_the_gateway_config_as_the_pods_run_it():
    env = {"JAEGER_ENDPOINT": "jaeger-collector:4317", "K8S_NODE_NAME": "node-a",
           "K8S_POD_NAME": "otel-gateway-collector-0"}
    out = validate(K8S / "config" / "gateway.yaml", env=env)
    assert out.returncode == 0, out.stdout
    out = validate(K8S / "config" / "gateway.yaml", K8S / "overlays" / "dev" / "dev.yaml", env=env)
    assert out.returncode == 0, out.stdout


def test_sluice_validates_the_agent_config():
    """The agent config passes `sluice validate`, except for agent components not built in
    yet: then those, and only those, are refused by type (any other error fails)."""
    env = {"K8S_NODE_NAME": "node-a", "K8S_POD_NAME": "otel-agent-collector-x"}
    out = validate(K8S / "config" / "agent.yaml", env=env)
    components = run_sluice(["components"]).stdout
    missing = {(kind, name) for kind, name in AGENT_COMPONENTS
               if not re.search(rf"^\s*{re.escape(name)}\b", components, re.M)}
    if not missing:
        assert out.returncode == 0, out.stdout
        return
    assert out.returncode != 0
    errors = [line.strip() for line in out.stdout.splitlines() if line.startswith("  ")]
    refused = set()
    for e in errors:
        m = re.search(r'unknown (receiver|processor|exporter) type "([a-z0-9_]+)"', e)
        assert m, f"agent.yaml: an error other than a component not built in yet: {e}"
        refused.add((m.group(1), m.group(2)))
    assert refused == missing, f"refused {refused}, not built in: {missing}"
