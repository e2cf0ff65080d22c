"""The kill switches in ``/api/health/detailed`` as a non-admin sees them (admins see all)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cryptoorchestrator.api.routers.health import tenant_report

REPORT: dict[str, Any] = {
    "risk_actor": {
        "status": "healthy",
        "kill_switch": {"global": False, "users": 2, "user_ids": [3, 5]},
    }
}


def test_anonymous_sees_the_status_only() -> None:
    assert tenant_report(REPORT, None, None) == {"risk_actor": {"status": "healthy"}}  # type: ignore[arg-type]


def test_a_user_sees_the_switches_that_stop_their_bots_not_whose_others_are() -> None:
    for user_id, engaged in ((3, True), (4, False)):
        user = SimpleNamespace(id=user_id)
        view = tenant_report(REPORT, user, None)  # type: ignore[arg-type]
        assert view["risk_actor"] == {
            "status": "healthy",
            "kill_switch": {"global": False, "user": engaged},
        }
