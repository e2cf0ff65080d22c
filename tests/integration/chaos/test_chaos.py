"""One quick round of each chaos scenario of ``benchmarks/chaos.py``: the books stay whole.

The harness's own functions run here (not its CLI): a world of paper bots and two bots on one
simulator account, on Ray, on a private PostgreSQL (SQLite where PostgreSQL's binaries are
missing); a SIGKILLed bot process, a hung then killed risk actor (orders denied meanwhile),
the database away, an order answer lost at the exchange, both bots of one account killed.
After each run every invariant must hold.  Every wait is on a condition with a generous
deadline (the harness's ``PATIENT_S``); nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import glob
import importlib.util
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HARNESS = Path(__file__).resolve().parents[3] / "benchmarks" / "chaos.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_harness", HARNESS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and cloudpickle look modules up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    """The harness module."""
    return _load()


@pytest.fixture(scope="module")
def world(chaos: ModuleType, ray_session: Any) -> Iterator[Any]:
    """One paper bot and two bots on one simulator account, trading on every candle."""
    db = "postgres" if glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") else "sqlite"
    config = chaos.WorldConfig(db=db, paper_bots=1, account_bots=2, candles=200)
    with chaos.World(config) as w:
        yield w


@pytest.mark.parametrize(
    ("scenario", "kwargs"),
    [
        ("sigkill", {}),
        ("risk", {}),
        ("db", {"seconds": 2.0}),
        ("exchange", {"fault": "drop_close"}),
        ("two_bots", {}),
    ],
)
def test_scenario_keeps_every_invariant(
    chaos: ModuleType, world: Any, scenario: str, kwargs: dict[str, Any]
) -> None:
    results = chaos.run_scenario(world, scenario, 1, random.Random(7), **kwargs)
    assert [r.violations for r in results] == [[]]
    assert results[0].faults >= 1
    assert results[0].recovery_s is not None


def test_the_invariants_see_a_lost_fill(chaos: ModuleType, world: Any) -> None:
    """The check is not vacuous: a fill deleted from the books is reported."""
    from sqlalchemy import delete, select

    from cryptoorchestrator.platform.storage import db
    from cryptoorchestrator.platform.storage.models import Trade

    assert world.check() == []
    with db.session_scope(world.settings) as session:
        victim = session.scalars(
            select(Trade).where(Trade.bot_id == world.account_ids[0]).order_by(Trade.id.desc())
        ).first()
        assert victim is not None
        session.execute(delete(Trade).where(Trade.id == victim.id))
    found = world.check()
    assert any(v.startswith("lost fill") for v in found), found
    assert any(v.startswith("integrity") for v in found), found
