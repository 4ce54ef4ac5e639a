"""The served OpenAPI document is honest: a schema-driven fuzz run against a real server finds no
5xx and no response that breaks the document, and the document names the spec's paths."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.server import Server, running_server

CASES = {"count": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("openapi")
    with running_server("serve", f"sqlite:///{tmp / 'p.db'}", tmp, {"POIESIS_BACKEND": "none"}) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi/openapi.json")


def test_the_document_describes_the_tes_paths_and_the_error_body(server: Server) -> None:
    doc = httpx.get(f"{server.url}/openapi/openapi.json").json()
    assert set(doc["paths"]) == {
        "/ga4gh/tes/v1/service-info",
        "/ga4gh/tes/v1/tasks",
        "/ga4gh/tes/v1/tasks/{id}",
        "/ga4gh/tes/v1/tasks/{id}:cancel",
    }
    create = doc["paths"]["/ga4gh/tes/v1/tasks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewTask"
    }
    assert {"400", "413", "415", "503"} <= set(create["responses"])
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["msg", "status_code"]
    assert "owner" not in doc["components"]["schemas"]["Task"]["properties"]


OPERATIONS = ["GetServiceInfo", "ListTasks", "CreateTask", "GetTask", "CancelTask"]


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_fuzz(api_schema: schemathesis.BaseSchema, server: Server, operation_id: str) -> None:
    """Bounded: 60 generated requests per operation, each checked against the document (status code
    documented, body valid for its schema, content type) and for any 5xx."""
    operation = api_schema.find_operation_by_id(operation_id)
    count = 0

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        nonlocal count
        count += 1
        headers = {"Content-Type": "application/json"} if case.method == "POST" else {}
        # Every check but "a schema-valid request is accepted": the document states types and
        # shapes, not every rule of the door (absolute paths, limits, NUL bytes), which answer 400.
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    run()
    CASES["count"] += count
    assert count > 0
    assert "Traceback" not in server.log.read_text()


def test_fuzz_ran() -> None:
    print(f"schemathesis cases run: {CASES['count']}")
    assert CASES["count"] >= 5
