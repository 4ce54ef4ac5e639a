"""OpenTelemetry traces of the API's requests and its database statements, exported over OTLP/HTTP.

Off unless `otlp_traces_endpoint` is set; this module (and the SDK) is imported only then. A request
is a SERVER span named by its method and route template (`POST /ga4gh/tes/v1/tasks`), continuing
the caller's trace when it sends a W3C `traceparent`; each SQL statement is a child span (by the
SQLAlchemy instrumentation, and `statement` for those sent through asyncpg directly: the statement
text, never its parameters). Request and response headers
are not recorded, so no credential reaches the collector.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from poiesis import __version__
from poiesis.adapters.sqlalchemy.direct import DirectPostgres


class Tracing:
    def __init__(
        self, endpoint: str, *, sample_ratio: float = 1.0, service_name: str = "poiesis-api"
    ) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
        self.tracer = self.provider.get_tracer("poiesis")

    def engines(self, *engines: AsyncEngine | Engine) -> None:
        """Trace every statement these engines run."""
        synchronous = [e.sync_engine if isinstance(e, AsyncEngine) else e for e in engines]
        unique = list({id(e): e for e in synchronous}.values())
        # The instrumentation declares SQLAlchemy < 2.1 but only listens to the engine's cursor
        # events, which 2.1 keeps; tests/integration/test_tracing.py checks the spans arrive.
        SQLAlchemyInstrumentor().instrument(
            engines=unique, tracer_provider=self.provider, skip_dep_check=True
        )

    def direct(self, direct: DirectPostgres) -> None:
        """Trace every statement sent through asyncpg directly, as the engines' are traced."""
        direct.observe = self.statement

    @contextmanager
    def statement(self, sql: str) -> Iterator[None]:
        """A CLIENT span around one statement: its text, never its parameters."""
        name = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "SQL"
        attributes = {"db.system": "postgresql", "db.statement": sql}
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            yield

    @contextmanager
    def request(self, scope: dict[str, Any]) -> Iterator[Any]:
        """A SERVER span around one HTTP request; `finish(status)` names it by its route once known."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = str(scope.get("method", "GET"))
        with self.tracer.start_as_current_span(
            method,
            kind=SpanKind.SERVER,
            context=propagate.extract({k: headers[k] for k in ("traceparent", "tracestate") if k in headers}),
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))[:2048]},
        ) as span:

            def finish(status: int) -> None:
                route = scope.get("path_template")
                span.update_name(f"{method} {route}" if route else method)
                if route:
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

            yield finish

    def shutdown(self) -> None:
        """Send what is buffered and stop."""
        self.provider.shutdown()
        SQLAlchemyInstrumentor().uninstrument()
