"""TLS with a real client: the OpenTelemetry Python SDK sends traces, metrics and logs over
TLS gRPC to sluice (certificates made here with the openssl CLI), which forwards them to the
sink. With mTLS, a client without a certificate gets nothing through and sluice counts the
failed handshake."""

import shutil
import subprocess

import grpc
import pytest

from conftest import free_port, otlp_receiver, pipelines
from sdk_workload import SdkClient, check_all


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """CA, a server certificate for localhost/127.0.0.1 and a client certificate (P-256)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates "
                    "(scripts/setup-test-env.sh installs it)")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=sluice e2e CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, ext in [
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ]:
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=sluice e2e {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)
    return d


def tls_forwarder(pki, sink, client_ca: bool) -> dict:
    tls = {"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key")}
    if client_ca:
        tls["client_ca_file"] = str(pki / "ca.crt")
    return {
        "receivers": {"otlp": otlp_receiver(grpc_extra={"tls": tls})},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], ["otlp"])},
    }


def localhost(endpoint: str) -> str:
    """The receiver's 127.0.0.1:port as localhost:port, the name in the certificate."""
    return "localhost:" + endpoint.rsplit(":", 1)[1]


def test_python_sdk_sends_over_tls_grpc(sluice, sink, tmp_path):
    pki = make_pki(tmp_path)
    s = sluice(tls_forwarder(pki, sink, client_ca=False))
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes())
    client = SdkClient("grpc", localhost(s.grpc_endpoint), credentials=creds)
    try:
        sent = client.send_all()
    finally:
        client.shutdown()
    check_all(sent, sink, timeout=15)
    assert s.metric("otelcol_receiver_accepted_spans_total", receiver="otlp",
                    transport="grpc") == 5
    assert not s.metric("otelcol_receiver_failed_requests_total", reason="tls_handshake")


def test_mtls_refuses_a_client_without_a_certificate(sluice, sink, tmp_path):
    pki = make_pki(tmp_path)
    s = sluice(tls_forwarder(pki, sink, client_ca=True))
    ca = (pki / "ca.crt").read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.crt").read_bytes())
    client = SdkClient("grpc", localhost(s.grpc_endpoint), credentials=with_cert)
    try:
        sent = client.send_all()
    finally:
        client.shutdown()
    check_all(sent, sink, timeout=15)

    # No client certificate: the handshake fails, nothing is accepted, the failure is counted.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    exporter = OTLPSpanExporter(endpoint=f"https://{localhost(s.grpc_endpoint)}", timeout=2,
                                insecure=False,
                                credentials=grpc.ssl_channel_credentials(root_certificates=ca))
    provider = TracerProvider()
    results = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span):
            results.append(exporter.export([span]))

    provider.add_span_processor(Recording(exporter))
    with provider.get_tracer("e2e").start_as_current_span("no-cert"):
        pass
    provider.shutdown()
    assert results == [SpanExportResult.FAILURE]
    failed = s.wait_metric("otelcol_receiver_failed_requests_total", lambda v: v and v >= 1,
                           receiver="otlp", transport="grpc", reason="tls_handshake")
    assert failed and failed >= 1
    assert s.metric("otelcol_receiver_accepted_spans_total", receiver="otlp",
                    transport="grpc") == 5
