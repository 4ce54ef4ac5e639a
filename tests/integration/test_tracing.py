"""OpenTelemetry tracing: a real `poiesis api` exporting over OTLP/HTTP to a receiver on 127.0.0.1 that
decodes what arrives with the OTLP protocol's own message types."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.server import running_server

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        export = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            self.server.requests.append(dict(self.headers))
            for resource in export.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scoped in resource.scope_spans:
                    for span in scoped.spans:
                        self.server.spans.append(
                            {
                                "name": span.name,
                                "kind": span.kind,
                                "trace": span.trace_id.hex(),
                                "id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "service": service.get("service.name"),
                            }
                        )
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def spans_of(receiver: Receiver, trace_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The trace's spans once its SERVER span has arrived. A server span ends after the statements
    beneath it, so they were queued for export before it; their count is the server's own (a create
    on SQLite sends several statements), so it is not what to wait for."""
    deadline = time.monotonic() + timeout
    while True:
        with receiver.lock:
            found = [s for s in receiver.spans if s["trace"] == trace_id]
        if any(s["kind"] == 2 for s in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_request_and_its_statements_are_one_trace(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    env = {
        "POIESIS_BACKEND": "none",
        "POIESIS_OTLP_TRACES_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{caller_trace}-00f067aa0ba902b7-01"
    with running_server("api", database_url, tmp_path, env) as server:
        created = httpx.post(
            f"{server.tes}/tasks",
            json=TASK,
            headers={"traceparent": traceparent, "Authorization": "Bearer secret-token-value"},
            timeout=10,
        )
        assert created.status_code == 200
        task_id = created.json()["id"]
        assert httpx.get(f"{server.tes}/tasks/{task_id}", timeout=10).status_code == 200
        spans = spans_of(receiver, caller_trace)

        # The POST continued the caller's trace: a SERVER span named by its route, its statements
        # beneath it.
        (root,) = [s for s in spans if s["kind"] == 2]
        assert root["name"] == "POST /ga4gh/tes/v1/tasks"
        assert root["parent"] == "00f067aa0ba902b7"
        assert root["attributes"]["http.route"] == "/ga4gh/tes/v1/tasks"
        assert root["attributes"]["http.response.status_code"] == 200
        assert root["service"] == "poiesis-api"
        statements = [s for s in spans if s["kind"] == 3]
        assert statements, spans
        assert all(s["parent"] == root["id"] for s in statements)
        text = " ".join(
            str(s["attributes"].get("db.statement", s["attributes"].get("db.query.text", "")))
            for s in statements
        )
        assert "INSERT INTO task" in text
        assert task_id not in text  # statements, not their parameters

        # The GET is a trace of its own, named by the route template, not the task's id.
        deadline = time.monotonic() + 20
        while True:
            with receiver.lock:
                gets = [s for s in receiver.spans if s["name"] == "GET /ga4gh/tes/v1/tasks/{ref}"]
            if gets or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert gets
        assert gets[0]["trace"] != caller_trace
    with receiver.lock:
        everything = repr(receiver.spans) + repr(receiver.requests)
    assert "secret-token-value" not in everything


def test_tracing_is_off_unless_configured(database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    env = {
        "POIESIS_BACKEND": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    }
    with running_server("api", database_url, tmp_path, env) as server:
        assert httpx.post(f"{server.tes}/tasks", json=TASK, timeout=10).status_code == 200
        time.sleep(1)
    assert receiver.spans == []
