"""Logging in at /docs: the OAuth2 password flow that Swagger UI's Authorize dialog speaks."""

from __future__ import annotations

from fastapi.testclient import TestClient
from tests.integration.api.conftest import PASSWORD, assert_error_shape


def test_openapi_declares_the_password_flow_for_every_protected_route(lite: TestClient) -> None:
    doc = lite.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {"OAuth2PasswordBearer"}
    flow = schemes["OAuth2PasswordBearer"]["flows"]["password"]
    assert flow["tokenUrl"] == "/api/auth/token"  # noqa: S105
    assert "Authorize" in doc["info"]["description"]
    token_op = doc["paths"]["/api/auth/token"]["post"]
    assert "application/x-www-form-urlencoded" in token_op["requestBody"]["content"]
    assert {"401", "423", "429"} <= set(token_op["responses"])
    for path, item in doc["paths"].items():
        for operation in item.values():
            for requirement in operation.get("security", []):
                assert set(requirement) <= set(schemes), path  # no dangling scheme
    assert {} in doc["paths"]["/api/health/detailed"]["get"]["security"]  # anonymous allowed


def test_form_login_returns_a_bearer_token_swagger_can_use(lite: TestClient) -> None:
    email = "swagger@example.com"
    assert (
        lite.post("/api/auth/register", json={"email": email, "password": PASSWORD}).status_code
        == 201
    )
    # What Swagger UI sends: grant_type, username, password, and empty client fields.
    r = lite.post(
        "/api/auth/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "scope": "",
            "client_id": "",
            "client_secret": "",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"  # noqa: S105
    assert body["expires_in"] > 0
    assert r.headers["cache-control"] == "no-store"
    profile = lite.get(
        "/api/auth/profile", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert profile.status_code == 200
    assert profile.json()["email"] == email
    refreshed = lite.post("/api/auth/refresh", json={"refreshToken": body["refresh_token"]})
    assert refreshed.status_code == 200
    # The JSON login is unchanged (camelCase tokens).
    login = lite.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert set(login.json()) == {"accessToken", "refreshToken", "tokenType", "expiresIn"}
    # Bad input is a 422 in the error shape, a wrong grant type too.
    missing = lite.post("/api/auth/token", data={"username": email})
    assert missing.status_code == 422
    assert_error_shape(missing.json(), "invalid_input")
    wrong_grant = lite.post(
        "/api/auth/token",
        data={"grant_type": "client_credentials", "username": email, "password": PASSWORD},
    )
    assert wrong_grant.status_code == 422
