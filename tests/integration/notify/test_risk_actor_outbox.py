"""The real risk actor (local Ray) writes the outbox rows of a breach and of the kill switch in
the transactions that record them; a dispatcher then delivers them to a webhook receiver."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import ray
from sqlalchemy import select
from tests.integration.notify.receivers import http_receiver

from cryptoorchestrator.cluster.risk_actor import RiskActor, settings_payload
from cryptoorchestrator.cluster.runtime import NAMESPACE
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.channels import ChannelService
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.dispatcher import Dispatcher
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, Notification, User

pytestmark = pytest.mark.ray
SECRET = "test-secret-key-0123456789"


def test_breach_and_kill_switch_reach_the_owner(ray_session: Any, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'risk.db'}",
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key=SECRET,
    )
    db.upgrade(settings)
    box = SecretBox(SECRET)
    with http_receiver() as rx:
        ns = NotifySettings(allowed_hosts=[rx.host])
        with db.session_scope(settings) as session:
            user = User(email="u@example.com", password_hash="x")
            session.add(user)
            session.flush()
            bot = Bot(
                user_id=user.id,
                name="b",
                trading_pair="BTC/USDT",
                strategy="sma_cross",
                timeframe="1h",
                risk_per_trade=D(1),
                max_position_size=D(50),
                desired_state="running",
                status="Running",
                starting_balance=D(1000),
            )
            session.add(bot)
            session.flush()
            bot_id, user_id = bot.id, user.id
            _, config = ChannelService(session, box, ns, user.id).create(
                "hook", {"kind": "webhook", "url": rx.url + "/hook"}
            )
            secret = config.secret
        assert secret is not None
        actor = RiskActor.options(namespace=NAMESPACE).remote(settings_payload(settings))  # type: ignore[attr-defined]
        try:
            ray_session.get(actor.set_limits.remote({"max_daily_loss_pct": "3"}))
            ray_session.get(actor.update_equity.remote(bot_id, "960"))
            ray_session.get(actor.kill_switch.remote(False))
        finally:
            ray_session.kill(actor)
        with db.session_scope(settings) as session:
            rows = list(session.scalars(select(Notification).order_by(Notification.id)))
        types = [r.event_type for r in rows]
        assert "risk.breach" in types
        assert "kill_switch.engaged" in types
        assert "bot.stopped" in types
        assert {r.user_id for r in rows} == {user_id}
        dispatcher = Dispatcher(db.session_factory(settings), box, ns)

        async def drain() -> None:
            while await dispatcher.run_once():
                pass

        asyncio.run(drain())
        received = [e["id"] for q in rx.acknowledged() for e in q.json()["events"]]
        assert sorted(received) == sorted(r.event_key for r in rows)
        for q in rx.acknowledged():
            signing.verify(secret, q.headers, q.body)
    db.dispose_engines()


def test_a_restarted_risk_actor_tells_the_admins_once(ray_session: Any, tmp_path: Path) -> None:
    """Ray restarts the killed actor; the new incarnation writes one row per admin channel."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'risk.db'}",
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key=SECRET,
    )
    db.upgrade(settings)
    box = SecretBox(SECRET)
    with http_receiver() as rx:
        ns = NotifySettings(allowed_hosts=[rx.host])
        with db.session_scope(settings) as session:
            admin = User(email="ops@example.com", password_hash="x", role="admin")
            trader = User(email="t@example.com", password_hash="x")
            session.add_all([admin, trader])
            session.flush()
            for user in (admin, trader):
                ChannelService(session, box, ns, user.id).create(
                    "hook", {"kind": "webhook", "url": rx.url + f"/{user.id}"}
                )
            admin_id = admin.id

        def restarts() -> list[Notification]:
            with db.session_scope(settings) as session:
                return list(
                    session.scalars(
                        select(Notification).where(
                            Notification.event_type == "risk_actor.restarted"
                        )
                    )
                )

        actor = RiskActor.options(namespace=NAMESPACE).remote(settings_payload(settings))  # type: ignore[attr-defined]
        try:
            assert ray_session.get(actor.ping.remote())["ready"]
            assert restarts() == []  # the first incarnation is no restart
            ray_session.kill(actor, no_restart=False)
            deadline = time.monotonic() + 120
            rows: list[Notification] = []
            while time.monotonic() < deadline:
                try:
                    answer = ray_session.get(actor.ping.remote(), timeout=30)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    answer = None  # still restarting
                rows = restarts() if answer else []
                if rows:
                    break
                time.sleep(0.2)
        finally:
            ray_session.kill(actor)
        assert [r.user_id for r in rows] == [admin_id]
        assert rows[0].event_key.startswith("risk_actor_restart:")
    db.dispose_engines()
