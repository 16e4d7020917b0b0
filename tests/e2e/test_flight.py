"""The Arrow Flight hop between two sluices: the real Python SDK -> sluice agent (otlp in,
flight out) -> sluice gateway (flight in, otlp out) -> the OTLP sink.

- The Flight path delivers exactly what the OTLP path delivers: the agent sends every batch
  both ways at once (two exporters), and the two sinks receive byte-identical requests.
- A gateway killed with SIGKILL mid-stream and restarted loses nothing it acknowledged: every
  span the agent counts as sent reaches the sink (a retry of something delivered but not yet
  acknowledged when the gateway died may arrive twice: counted and reported, not an error).
"""

import threading
import time
import uuid

import grpc
import pytest

from conftest import free_port, otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, OtlpSink, make_trace_request
from sdk_workload import SdkClient, check_all

SIGNALS = ("traces", "metrics", "logs")
FAST_RETRY = {"enabled": True, "initial_interval": "100ms", "max_interval": "500ms",
              "max_elapsed_time": "60s"}


def gateway_config(receiver: str, receiver_config: dict, sink: OtlpSink,
                   queue: bool = True) -> dict:
    """`receiver` -> (no processors) -> otlp exporter to `sink`. Without a queue the
    exporter delivers before the receiver answers, so an acknowledgement means delivered."""
    exporter = {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True},
                "retry_on_failure": FAST_RETRY}
    if not queue:
        exporter["sending_queue"] = {"enabled": False}
    return {
        "receivers": {receiver: receiver_config},
        "exporters": {"otlp": exporter},
        "service": {"pipelines": pipelines([receiver], [], ["otlp"])},
    }


def flight_exporter(port: int, **extra) -> dict:
    return {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}, **extra}


def requests_by_signal(sink: OtlpSink) -> dict:
    return {s: sorted(r.SerializeToString() for r in sink.requests(s)) for s in SIGNALS}


def test_flight_delivers_exactly_what_otlp_delivers(sluice):
    sink_flight, sink_otlp = OtlpSink().start(), OtlpSink().start()
    try:
        flight_port = free_port()
        via_flight = sluice(gateway_config(
            "flight", {"endpoint": f"127.0.0.1:{flight_port}"}, sink_flight), name="gw-flight")
        via_otlp = sluice(gateway_config("otlp", otlp_receiver(), sink_otlp), name="gw-otlp")
        agent = sluice({
            "receivers": {"otlp": otlp_receiver()},
            "processors": {"batch": {"timeout": "100ms"}},
            "exporters": {
                "flight": flight_exporter(flight_port),
                "otlp": {"endpoint": via_otlp.grpc_endpoint, "tls": {"insecure": True}},
            },
            "service": {"pipelines": pipelines(["otlp"], ["batch"], ["flight", "otlp"])},
        }, name="agent")

        client = SdkClient("grpc", agent.grpc_endpoint)
        try:
            sent = client.send_all()
        finally:
            client.shutdown()
        # Both paths deliver the whole workload, attributes, events and values intact...
        check_all(sent, sink_flight, timeout=20)
        check_all(sent, sink_otlp, timeout=20)
        # ... as the very same requests: same payloads, re-encoded to the same bytes.
        deadline = time.monotonic() + 10
        while requests_by_signal(sink_flight) != requests_by_signal(sink_otlp):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        got_flight, got_otlp = requests_by_signal(sink_flight), requests_by_signal(sink_otlp)
        for s in SIGNALS:
            assert got_flight[s] == got_otlp[s], (
                f"{s}: {len(got_flight[s])} requests via Flight, {len(got_otlp[s])} via OTLP, "
                f"contents differ")
            assert got_flight[s], f"no {s} at all"

        spans = agent.metric("otelcol_exporter_sent_spans_total", exporter="flight")
        assert spans == agent.metric("otelcol_exporter_sent_spans_total", exporter="otlp") == 5
        assert via_flight.metric("otelcol_receiver_accepted_spans_total", receiver="flight",
                                 transport="flight") == 5
        assert via_flight.metric("otelcol_receiver_accepted_log_records_total",
                                 receiver="flight", transport="flight") == 3
        assert not via_flight.metric("otelcol_receiver_failed_requests_total",
                                     receiver="flight")
        assert not agent.metric("otelcol_exporter_send_failed_spans_total", exporter="flight")
    finally:
        sink_flight.stop()
        sink_otlp.stop()


def sender(agent, run_id: str, requests: int, per_request: int, pause: float,
           accepted: list, refused: list, stop: threading.Event):
    """Sends `requests` requests of spans to the agent, `pause` apart; records span ids of
    requests the agent accepted (and of those it refused: its queue never fills here)."""
    with grpc.insecure_channel(agent.grpc_endpoint) as ch:
        export = ch.unary_unary(GRPC_METHODS["traces"])
        for i in range(requests):
            if stop.is_set():
                return
            req, ids = make_trace_request(per_request, run_id, first=i * per_request)
            try:
                export(req.SerializeToString(), timeout=10)
                accepted.extend(ids)
            except grpc.RpcError as e:
                refused.append((i, e.code().name))
            time.sleep(pause)


@pytest.mark.slow
def test_a_gateway_killed_mid_stream_loses_nothing_it_acknowledged(sluice):
    sink = OtlpSink().start()
    try:
        port = free_port()
        gateway = sluice(gateway_config("flight", {"endpoint": f"127.0.0.1:{port}"}, sink,
                                        queue=False), name="gateway")
        agent = sluice({
            "receivers": {"otlp": otlp_receiver()},
            "processors": {"batch": {"timeout": "50ms", "send_batch_size": 200}},
            "exporters": {"flight": flight_exporter(port, timeout="2s",
                                                    retry_on_failure=FAST_RETRY)},
            "service": {"pipelines": pipelines(["otlp"], ["batch"], ["flight"],
                                               signals=("traces",))},
        }, name="agent")

        run_id = uuid.uuid4().hex[:8]
        accepted, refused, stop = [], [], threading.Event()
        t = threading.Thread(target=sender, args=(agent, run_id, 100, 20, 0.04, accepted,
                                                  refused, stop))
        t.start()
        try:
            # Mid-stream: some spans through, many still to come.
            assert sink.wait_for(lambda k: len(k.spans()) >= 300, 15), "nothing flowed"
            gateway.proc.kill()  # SIGKILL: no flush, no goodbye
            gateway.proc.wait(5)
            at_kill = len(sink.spans())
            time.sleep(1.0)  # the agent keeps accepting and retrying meanwhile
            gateway.start()
        finally:
            t.join(60)
            stop.set()
        assert not refused, f"the agent refused requests: {refused[:5]}"
        assert len(accepted) == 2000

        # Everything the agent accepted is eventually acknowledged (sent)...
        sent = agent.wait_metric("otelcol_exporter_sent_spans_total", lambda v: v == 2000,
                                 timeout=40, exporter="flight")
        assert sent == 2000, f"the agent counts {sent} of 2000 spans sent"
        assert not agent.metric("otelcol_exporter_send_failed_spans_total", exporter="flight")
        # ... and everything acknowledged reached the sink.
        ids = [s["span_id"] for s in sink.spans() if s["attributes"].get("e2e.run_id") == run_id]
        missing = set(accepted) - set(ids)
        assert not missing, f"{len(missing)} acknowledged spans never reached the sink"
        assert set(ids) == set(accepted)
        duplicates = len(ids) - len(set(ids))
        after_restart = gateway.metric("otelcol_receiver_accepted_spans_total",
                                       receiver="flight", transport="flight")
        print(f"killed after {at_kill} spans reached the sink; the restarted gateway took "
              f"{after_restart:.0f}; {duplicates} spans arrived twice (delivered by the killed "
              f"gateway, not acknowledged before it died)")
        assert 0 < at_kill < 2000 and after_restart and after_restart < 2000, (
            "the kill happened mid-stream and the stream resumed on the new gateway")
    finally:
        sink.stop()
