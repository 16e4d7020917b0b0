"""Graceful shutdown of the binary: on SIGTERM or SIGINT sluice stops accepting, flushes what
its batch processor holds through the exporter's queue, and exits 0; nothing accepted is lost."""

import signal

import pytest

from conftest import otlp_receiver, pipelines
from sdk_workload import SdkClient, check_all


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_flushes_batches_and_queues_then_exits_0(sluice, sink, sig):
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        # A batch that would hold everything for an hour: only shutdown sends it.
        "processors": {"batch": {"timeout": "1h", "send_batch_size": 100000}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], ["otlp"])},
    })
    client = SdkClient("grpc", s.grpc_endpoint)
    try:
        sent = client.send_all()
    finally:
        client.shutdown()
    assert s.metric("otelcol_receiver_accepted_spans_total", receiver="otlp") == 5
    assert not sink.received(), "the batch holds the data until shutdown"

    s.proc.send_signal(sig)
    rc = s.proc.wait(timeout=15)
    s.exit_reported = True  # checked here, not again at teardown
    assert rc == 0, f"exit code {rc} after {sig.name}\n{s.log_tail()}"
    check_all(sent, sink, timeout=5)
    assert f"{sig.name} received" in s.log_path.read_text()
