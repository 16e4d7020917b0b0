"""Nothing accepted is lost to request size (issue 16): a tail-sampling backlog released at
SIGTERM reaches a receiver with a small message limit complete, whether the exporter splits
to its own limit first or learns the receiver's from its "too large" answers; failed exports
are logged at warn, once per burst, with the endpoint."""

import re
import signal
import time
import uuid

import grpc
import pytest

from conftest import otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, make_trace_request

N_SPANS = 40_000
PER_REQUEST = 1_000


def send_spans(endpoint: str, run_id: str, n: int, per_request: int = PER_REQUEST,
               pad: int = 0) -> set[bytes]:
    """n spans over OTLP/gRPC in requests of `per_request`; every request must be accepted.
    Returns the span ids sent."""
    ids: set[bytes] = set()
    with grpc.insecure_channel(endpoint) as ch:
        export = ch.unary_unary(GRPC_METHODS["traces"])
        for first in range(0, n, per_request):
            req, hex_ids = make_trace_request(min(per_request, n - first), run_id, first=first,
                                              pad=pad)
            export(req.SerializeToString(), timeout=10)
            ids.update(bytes.fromhex(h) for h in hex_ids)
    return ids


def delivered_ids(sink, run_id: str) -> set[bytes]:
    """Span ids of the run the sink received (read from the raw requests: 40,000 spans)."""
    out = set()
    for req in sink.requests("traces"):
        for rs in req.resource_spans:
            if not any(a.key == "e2e.run_id" and a.value.string_value == run_id
                       for a in rs.resource.attributes):
                continue
            for ss in rs.scope_spans:
                out.update(sp.span_id for sp in ss.spans)
    return out


def span_count(sink, run_id: str) -> int:
    """Spans of the run the sink received, duplicates included."""
    return sum(len(ss.spans) for req in sink.requests("traces") for rs in req.resource_spans
               if any(a.key == "e2e.run_id" and a.value.string_value == run_id
                      for a in rs.resource.attributes)
               for ss in rs.scope_spans)


@pytest.mark.parametrize("exporter_limit", ["split_to_own_limit", "learn_from_too_large"])
def test_tail_sampling_backlog_at_sigterm_reaches_a_1mib_receiver_complete(
        sluice, sink, exporter_limit):
    # The receiving gateway: a 1 MiB message limit, forwarding to the sink.
    gateway = sluice({
        "receivers": {"otlp": otlp_receiver(grpc_extra={"max_recv_msg_size_mib": 1})},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], [], ["otlp"], signals=("traces",))},
    }, name="gateway")
    # Generous timeouts: on a loaded machine a debug-build gateway can take seconds per MiB,
    # and a timed-out attempt that did arrive would come again (at least once, not loss).
    exporter = {"endpoint": gateway.grpc_endpoint, "tls": {"insecure": True}, "timeout": "30s",
                "sending_queue": {"drain_timeout": "60s"},
                "retry_on_failure": {"initial_interval": "100ms", "max_interval": "1s"}}
    if exporter_limit == "split_to_own_limit":
        exporter["max_request_size"] = 1 << 20
    # else the default (4 MiB): the gateway's OUT_OF_RANGE answers make the exporter split.
    agent = sluice({
        "receivers": {"otlp": otlp_receiver()},
        # Everything is kept, nothing decided before shutdown: SIGTERM releases the backlog.
        "processors": {"tail_sampling": {"decision_wait": "1h", "num_traces": 200_000,
                                         "policies": [{"name": "all", "type": "always_sample"}]}},
        "exporters": {"otlp": exporter},
        "service": {"pipelines": pipelines(["otlp"], ["tail_sampling"], ["otlp"],
                                           signals=("traces",))},
    }, name="agent")
    run_id = uuid.uuid4().hex[:8]
    # ~330 bytes a span: 13 MB in all, and a full 8192-span release of tail sampling (2.7 MB)
    # is itself over the gateway's 1 MiB.
    sent = send_spans(agent.grpc_endpoint, run_id, N_SPANS, pad=200)
    assert len(sent) == N_SPANS
    assert agent.metric("otelcol_receiver_accepted_spans_total", receiver="otlp") == N_SPANS
    assert not sink.received(), "tail sampling holds everything until shutdown"

    agent.proc.send_signal(signal.SIGTERM)
    rc = agent.proc.wait(timeout=90)
    agent.exit_reported = True
    assert rc == 0, f"agent exited with {rc}\n{agent.log_tail()}"

    assert sink.wait_for(lambda k: delivered_ids(k, run_id) == sent, timeout=30), \
        f"{len(sent - delivered_ids(sink, run_id))} of {N_SPANS} acknowledged spans lost"
    time.sleep(0.5)  # a duplicate would show up here
    assert span_count(sink, run_id) == N_SPANS, "each span exactly once"
    too_large = gateway.metric("otelcol_receiver_failed_requests_total", receiver="otlp",
                               reason="too_large") or 0
    if exporter_limit == "split_to_own_limit":
        assert too_large == 0, "nothing over the exporter's own limit was sent"
    else:
        assert too_large > 0, "the default limit is above the gateway's: it answered too large"
        assert "the server refused a request as too large" in agent.log_path.read_text()


def test_export_failures_are_logged_at_warn_once_per_burst_with_the_endpoint(sluice, sink):
    sink.fail_with(grpc_code=grpc.StatusCode.UNAVAILABLE)
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True},
                               "retry_on_failure": {"initial_interval": "50ms",
                                                    "max_interval": "100ms",
                                                    "max_elapsed_time": "60s"}}},
        "service": {"pipelines": pipelines(["otlp"], [], ["otlp"], signals=("traces",))},
    })
    run_id = uuid.uuid4().hex[:8]
    sent = send_spans(s.grpc_endpoint, run_id, 200, per_request=20)
    time.sleep(2)  # ~20 failed attempts per request: a burst of hundreds
    sink.fail_with(None)
    assert sink.wait_for(lambda k: delivered_ids(k, run_id) == sent, timeout=20)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", s.log_path.read_text())  # the log's colours
    lines = [line for line in plain.splitlines()
             if f"export to {sink.grpc_endpoint} failed; retrying" in line]
    assert len(lines) == 1, "one warn line per burst (10 s), got:\n" + "\n".join(lines[:5])
    assert re.search(r"\bWARN\b", lines[0]) and "Unavailable" in lines[0], lines[0]
    assert "more_failed_attempts=0" in lines[0], "the first failure of a burst is logged at once"
    assert not s.metric("otelcol_exporter_send_failed_spans_total", exporter="otlp")
