"""Graceful shutdown of the binary: on SIGTERM or SIGINT sluice stops accepting, flushes what
its batch processor holds through the exporter's queue, and exits 0; nothing accepted is lost.
What cannot be delivered by the drain deadline is dropped, counted and reported: exit 3."""

import signal

import grpc
import pytest

from conftest import otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, OtlpSink, make_trace_request
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


def test_undeliverable_data_at_the_drain_deadline_exits_3_with_a_final_line(sluice):
    """The destination is down at SIGTERM: sluice retries until the configured drain deadline
    (2 s here, not the 25 s default), then drops what is left, says so in a last error line with
    the counts, and exits 3 — not 0, which would tell Kubernetes nothing was lost."""
    down = OtlpSink()  # ports reserved, nothing listening
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "processors": {},
        "exporters": {"otlp": {"endpoint": down.grpc_endpoint, "tls": {"insecure": True},
                               "timeout": "500ms",
                               "sending_queue": {"drain_timeout": "2s"},
                               "retry_on_failure": {"initial_interval": "100ms",
                                                    "max_interval": "200ms",
                                                    "max_elapsed_time": "0s"}}},
        "service": {"pipelines": pipelines(["otlp"], [], ["otlp"], signals=("traces",))},
    })
    req, _ = make_trace_request(5, "0000dead")
    with grpc.insecure_channel(s.grpc_endpoint) as ch:
        ch.unary_unary(GRPC_METHODS["traces"])(req.SerializeToString(), timeout=10)
    assert s.metric("otelcol_receiver_accepted_spans_total", receiver="otlp") == 5
    s.proc.send_signal(signal.SIGTERM)
    rc = s.proc.wait(timeout=12)  # the 25 s default would not fit
    s.exit_reported = True
    log = s.log_path.read_text()
    assert rc == 3, f"exit code {rc}\n{s.log_tail()}"
    assert "stopped with data loss: 5 spans still undelivered" in log, s.log_tail()
