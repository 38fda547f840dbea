"""Property-based requests over the server's own OpenAPI schema (schemathesis + hypothesis): whatever a client sends
that the schema describes, the server answers without a 500. A scripted backend stands in for the model (the
properties under test are the HTTP layer's and the service's, and it keeps the run bounded); the catalogs are the
fixture mirror's. Each operation gets a fixed number of examples, so the run's length is bounded."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.corpus.conftest import source_mirror  # noqa: F401 - the catalogs
from tests.serve.test_promises import ScriptedBackend

pytestmark = pytest.mark.slow
HEADERS = {"Authorization": "Bearer k", "Host": "localhost"}


def test_no_request_the_schema_describes_gets_a_500(source_mirror, tmp_path):  # noqa: F811
    from cybersecqwen.serve.app import ServerSettings, create_app
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    backend = ScriptedBackend()
    app = create_app(backend, CtiService(backend, load_catalogs(source_mirror)),
                     ServerSettings(model_name="scripted", api_key="k", audit_log=tmp_path / "audit.jsonl"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=HEADERS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/chat/completions", "POST /v1/cwe/classify",
                                                                       "POST /v1/cve/map", "POST /v1/attack/extract"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def answers_without_a_server_error(case) -> None:
            response = case.call(headers=HEADERS)
            assert response.status_code < 500, f"{operation.method.upper()} {operation.path}: {response.status_code} {response.text[:300]}"

        answers_without_a_server_error()
