"""Code execution through a strategy field: a tenant may only pick a registered strategy name.

Each attack names code on the server (a file, a directory, a module, ``module:attr``) where a
strategy name is expected; the file or module would write a marker file if it were ever
imported.  Every attack is refused as an unknown strategy and the marker never appears.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.security.conftest import assert_error_shape, options, register_and_login, set_role

from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade
from cryptoorchestrator.platform.storage.models import Bot
from cryptoorchestrator.strategies import registry

BOT = {"name": "b1", "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
UNKNOWN = "unknown strategy (not a registered name)"

EVIL_CODE = (
    "from pathlib import Path\n"
    "import numpy as np\n"
    "from cryptoorchestrator.platform.strategy.base import Signals, Strategy\n"
    "Path({marker!r}).open('a').write('imported\\n')\n"
    "class Evil(Strategy):\n"
    "    '''Writes a marker file when imported.'''\n"
    "    name = {name!r}\n"
    "    def signals(self, bars, params):\n"
    "        n = len(bars.close)\n"
    "        return Signals(np.ones(n, bool), np.zeros(n, bool))\n"
)


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start with the built-ins only, as a fresh API process does."""
    monkeypatch.setattr(registry, "_USER", {})
    monkeypatch.setattr(registry, "_LOADED", set())


class Evil:
    """A file, its directory and an importable module that write ``marker`` when imported."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.module = f"evil_{uuid.uuid4().hex[:10]}"
        self.dir = root / "evil"
        self.dir.mkdir()
        self.marker = root / "imported.marker"
        self.file = self.dir / f"{self.module}.py"
        self.file.write_text(EVIL_CODE.format(marker=str(self.marker), name=self.module))
        monkeypatch.syspath_prepend(str(self.dir))  # "evil_x:Evil" would import
        self.attacks = {
            "file": str(self.file),
            "file_attr": f"{self.file}:Evil",
            "directory": str(self.dir),
            "module_attr": f"{self.module}:Evil",
            "bare_module": self.module,  # a valid-looking name that is an importable module
            "stdlib_attr": "os:system",
            "platform_module": "cryptoorchestrator.strategies.sma_cross:SmaCross",
            "dotted": "a.b",
            "relative": "../evil/x.py",
        }

    def assert_not_imported(self) -> None:
        assert not self.marker.exists(), "the attacker's code was imported"
        assert self.module not in sys.modules
        assert not any(m.endswith(self.module) for m in sys.modules)


@pytest.fixture
def evil(monkeypatch: pytest.MonkeyPatch) -> Iterator[Evil]:
    # A short folder of its own: the attacks name real files, and a path over the field's
    # 100 characters would be refused for its length (pytest's tmp_path under xdist is long),
    # hiding whether the name itself is refused.
    root = Path(tempfile.mkdtemp(prefix="ev", dir="/tmp"))
    try:
        yield Evil(root, monkeypatch)
    finally:
        shutil.rmtree(root, ignore_errors=True)


ATTACKS = [
    "file",
    "file_attr",
    "directory",
    "module_attr",
    "bare_module",
    "stdlib_attr",
    "platform_module",
    "dotted",
    "relative",
]


def _trader(client: TestClient) -> dict[str, str]:
    h = register_and_login(client, "trader@example.com")
    set_role(client, "trader@example.com", "trader")
    return h


def _assert_unknown(r: Any) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert_error_shape(body, "invalid_input")
    assert body["details"][0]["field"] == "strategy"
    assert body["details"][0]["message"] == UNKNOWN
    assert "sma_cross" in body["details"][0]["allowed"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_create_bot_naming_code_is_refused_unimported(
    client: TestClient, evil: Evil, attack: str
) -> None:
    h = _trader(client)
    r = client.post("/api/bots", json={**BOT, "strategy": evil.attacks[attack]}, headers=h)
    _assert_unknown(r)
    evil.assert_not_imported()
    assert client.get("/api/bots", headers=h).json()["items"] == []


def test_patch_bot_strategy_to_code_is_refused_unimported(client: TestClient, evil: Evil) -> None:
    h = _trader(client)
    bot = client.post("/api/bots", json=BOT, headers=h)
    assert bot.status_code == 201, bot.text
    url = f"/api/bots/{bot.json()['id']}"
    for attack in ATTACKS:
        _assert_unknown(client.patch(url, json={"strategy": evil.attacks[attack]}, headers=h))
    evil.assert_not_imported()
    assert client.get(url, headers=h).json()["strategy"] == "sma_cross"


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/backtests", {}),
        ("/api/optimizations", {"space": {"fast": [5, 10]}}),
    ],
)
def test_run_bodies_naming_code_are_refused_before_the_cluster(
    client: TestClient, evil: Evil, url: str, body: dict[str, Any]
) -> None:
    h = _trader(client)
    for attack in ATTACKS:
        # 422 before the cluster is asked (without one the route would answer 503).
        _assert_unknown(
            client.post(url, json={**body, "strategy": evil.attacks[attack]}, headers=h)
        )
    evil.assert_not_imported()
    assert client.get(url, headers=h).json() == []


def test_errors_cannot_probe_which_files_or_modules_exist(client: TestClient, evil: Evil) -> None:
    h = _trader(client)
    # Each missing name is as long as its existing twin: a too-long value is refused for its
    # length before anything else, which must not make the two answers differ (the temporary
    # folder's path length varies, e.g. with pytest-xdist's worker folders).
    missing_file = evil.dir / ("m" * len(evil.file.stem) + ".py")
    missing_dir = evil.dir.with_name("n" * len(evil.dir.name))
    assert not missing_file.exists()
    assert not missing_dir.exists()
    pairs = [
        (str(evil.file), str(missing_file)),
        (f"{evil.file}:Evil", f"{missing_file}:Evil"),
        (str(evil.dir), str(missing_dir)),
        ("os:system", "no_such_module_xyz:system"),
        (evil.module, "no_such_module_xyz"),
        ("cryptoorchestrator.strategies.sma_cross:SmaCross", "cryptoorchestrator.nope:Nope"),
    ]
    for url, extra in [("/api/bots", BOT), ("/api/backtests", {})]:
        for existing, missing in pairs:
            a = client.post(url, json={**extra, "strategy": existing}, headers=h)
            b = client.post(url, json={**extra, "strategy": missing}, headers=h)
            assert a.status_code == b.status_code == 422
            assert a.content == b.content, (existing, missing)
    evil.assert_not_imported()


@pytest.fixture
def operator_client(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, Path]]:
    """An app whose operator registered ``tmp_path/strategies`` through ``strategy_paths``."""
    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "op_strategy_file.py").write_text(
        EVIL_CODE.format(marker=str(tmp_path / "operator.marker"), name="operator_always")
    )
    s = settings.model_copy(update={"database_url": db_url, "strategy_paths": [str(folder)]})
    upgrade(s)
    with TestClient(create_app(s, options=options())) as c:
        yield c, tmp_path
    dispose_engines()


def test_operator_strategy_paths_are_offered_by_name_and_nothing_else(
    operator_client: tuple[TestClient, Path], evil: Evil
) -> None:
    client, root = operator_client
    # Loaded once, at start-up, by the operator's configuration.
    assert (root / "operator.marker").read_text() == "imported\n"
    h = _trader(client)
    r = client.post("/api/bots", json={**BOT, "strategy": "operator_always"}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["strategy"] == "operator_always"
    # A strategy file outside strategy_paths stays unknown and is not imported.
    for attack in ("file", "file_attr", "directory", "module_attr", "bare_module"):
        refused = client.post(
            "/api/bots", json={**BOT, "name": "b2", "strategy": evil.attacks[attack]}, headers=h
        )
        _assert_unknown(refused)
        assert "operator_always" in refused.json()["details"][0]["allowed"]
    evil.assert_not_imported()
    assert (root / "operator.marker").read_text() == "imported\n"


def test_bot_actor_refuses_a_stored_code_reference(
    client: TestClient, evil: Evil, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptoorchestrator.cluster import bot_actor
    from cryptoorchestrator.cluster.risk_actor import settings_payload

    h = _trader(client)
    bot_id = client.post("/api/bots", json=BOT, headers=h).json()["id"]
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:  # a legacy row, written before names were checked
        session.execute(
            update(Bot)
            .where(Bot.id == bot_id)
            .values(strategy=evil.attacks["file_attr"], desired_state="running")
        )
        session.commit()

    class Bus:
        class publish:  # noqa: N801 (mimics an actor method)
            @staticmethod
            def remote(event: dict[str, Any]) -> None:
                pass

    monkeypatch.setattr(bot_actor, "get_event_bus", Bus)
    settings = client.app.state.context.settings  # type: ignore[attr-defined]
    slot = bot_actor.BotSlot(
        bot_id, settings_payload(settings), {"retry_initial_s": 3600, "feed": False}
    )
    # The slot shows Error before it writes it: wait for the stored status, the fact that
    # outlives the actor, rather than racing the write.
    try:
        deadline = time.monotonic() + 120
        row = client.get(f"/api/bots/{bot_id}", headers=h).json()
        while row["status"] != "Error" and time.monotonic() < deadline:
            time.sleep(0.05)
            row = client.get(f"/api/bots/{bot_id}", headers=h).json()
    finally:
        slot._task.cancel()
    assert row["status"] == "Error"
    assert slot.state["status"] == "Error"
    assert UNKNOWN in slot.state["reason"]
    evil.assert_not_imported()


def test_job_workers_register_the_operators_strategies_from_settings(
    settings: Settings, tmp_path: Path, evil: Evil
) -> None:
    from cryptoorchestrator.cluster import jobs
    from cryptoorchestrator.cluster.risk_actor import settings_payload

    folder = tmp_path / "strategies"
    folder.mkdir()
    (folder / "worker_strategy_file.py").write_text(
        EVIL_CODE.format(marker=str(tmp_path / "worker.marker"), name="worker_always")
    )
    operator = settings.model_copy(update={"strategy_paths": ["strategies"]})  # cwd: tmp_path
    # What a worker process rebuilds from its task arguments, with an empty registry.
    worker = Settings(**settings_payload(operator))
    assert worker.strategy_paths == [str(folder.resolve())]
    assert jobs._strategy(worker, "worker_always").name == "worker_always"
    for attack in ATTACKS:
        with pytest.raises(InvalidInputError, match="unknown strategy"):
            jobs._strategy(worker, evil.attacks[attack])
    evil.assert_not_imported()
