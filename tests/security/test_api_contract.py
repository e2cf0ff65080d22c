"""The OpenAPI document is a contract: schemathesis fuzzes every operation as an admin and as a
trader, with valid and invalid data, and every response must be declared by it.

Checks per response: no 5xx other than a 503 the operation documents; the status code, the
content type, the headers and the body all as the document declares; schema-invalid requests
refused with a 4xx.  Business rules the schema cannot express (a wrong TOTP code, a cursor that
was not issued by the server) answer a declared 4xx, so "schema-valid data accepted" is not
checked.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.security.conftest import PASSWORD, options, set_role

from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _documented_503(case: Any, status: int) -> bool:
    return status == 503 and "503" in case.operation.definition.raw.get("responses", {})


def _login(tc: TestClient, email: str) -> dict[str, str]:
    assert tc.post("/api/auth/register", json={"email": email, "password": PASSWORD}).is_success
    r = tc.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


@pytest.mark.slow
def test_every_operation_keeps_the_contract(settings: Settings, db_url: str) -> None:
    sqlite = db_url.startswith("sqlite")
    settings = settings.model_copy(update={"database_url": db_url})
    upgrade(settings)
    app = create_app(settings, options=options())
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    with TestClient(app) as tc:
        tokens = {"admin": _login(tc, "admin@example.com")}
        set_role(tc, "admin@example.com", "admin")
        tokens["trader"] = _login(tc, "trader@example.com")
        set_role(tc, "trader@example.com", "trader")
        for headers in tokens.values():
            r = tc.post(
                "/api/bots",
                json={"name": "fuzzed", "tradingPair": "BTC/USDT", "strategy": "sma_cross"},
                headers=headers,
            )
            assert r.status_code == 201, r.text
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 35
        for role in tokens:
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                    @given(case=operation.as_strategy(generation_mode=mode))
                    @settings_(
                        max_examples=4 if sqlite else 2,
                        deadline=None,
                        suppress_health_check=list(HealthCheck),
                        derandomize=True,
                    )
                    def run(case: Any) -> None:
                        headers = tokens[role]  # noqa: B023 (run() is called at once)
                        response = case.call(headers=headers)
                        key = f"{role} {case.method} {case.path}"  # noqa: B023
                        if response.status_code >= 500 and not _documented_503(
                            case, response.status_code
                        ):
                            failures[f"{key}: {response.status_code}"] += 1
                            examples.setdefault(key, response.text[:300])
                        try:
                            case.validate_response(response, checks=CHECKS, headers=headers)
                        except BaseException as exc:  # noqa: BLE001 (collect every violation)
                            for sub in getattr(exc, "exceptions", [exc]):
                                failures[f"{key}: {type(sub).__name__}"] += 1
                                examples.setdefault(f"{key}: {type(sub).__name__}", str(sub)[:400])

                    try:
                        run()
                    except Unsatisfiable:
                        # Nothing to make invalid (no parameters, no body): positive mode ran.
                        assert mode is GenerationMode.NEGATIVE
    dispose_engines()
    report = (f"{k} x{n}\n  {examples.get(k, '')}" for k, n in failures.items())
    assert not failures, "\n".join(report)
