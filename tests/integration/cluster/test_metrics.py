"""Platform metrics reach Ray's Prometheus endpoint; the dashboard options follow the settings."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

import pytest

from cryptoorchestrator.cluster.runtime import (
    dashboard_options,
    metrics_endpoint,
    ray_status,
)
from cryptoorchestrator.platform.settings import Settings


def _scrape(
    url: str,
    names: set[str],
    deadline_s: float = 120.0,
    labels: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, list[str]]:
    """Return the endpoint's sample lines of ``names`` once every name has one carrying its
    ``labels`` (Ray exports on an interval, so the first scrape may predate the samples, and
    earlier tests' processes may already export the same series)."""
    end = time.monotonic() + deadline_s
    wanted = labels or {}
    found: dict[str, list[str]] = {}
    missing: list[str] = sorted(names)
    while time.monotonic() < end:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            body = response.read().decode()
        found = {
            name: [ln for ln in body.splitlines() if ln.startswith(name + "{")] for name in names
        }
        missing = sorted(n for n in names if not _labelled(found[n], *wanted.get(n, ())))
        if not missing:
            return found
        time.sleep(1.0)
    raise AssertionError(f"metrics never exported: {missing}")


def _labelled(lines: list[str], *labels: str) -> list[str]:
    """Return the sample lines that carry every one of ``labels``."""
    return [ln for ln in lines if all(label in ln for label in labels)]


def test_telemetry_calls_are_exported(ray_session: Any) -> None:
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self) -> None:
            from cryptoorchestrator.cluster.metrics import RayTelemetry

            self.t = RayTelemetry()

        def record(self) -> None:
            self.t.order(7, "filled")
            self.t.order(7, "filled")
            self.t.fill(7, "buy")
            self.t.risk_decision(None, 0.002)
            self.t.risk_decision("max_drawdown_pct", 0.004)
            self.t.decision_latency(7, 0.03)
            self.t.equity(7, 10_250.5, 5_000.0)
            self.t.breaker("binance", "open")
            self.t.candle_lag(7, 12.0)

    recorder = Recorder.remote()  # type: ignore[attr-defined]
    ray.get(recorder.record.remote())
    url = metrics_endpoint()
    assert url is not None
    found = _scrape(
        url,
        {
            "ray_cryptoorch_orders_total",
            "ray_cryptoorch_fills_total",
            "ray_cryptoorch_risk_checks_total",
            "ray_cryptoorch_risk_check_seconds_count",
            "ray_cryptoorch_decision_seconds_bucket",
            "ray_cryptoorch_equity",
            "ray_cryptoorch_exposure",
            "ray_cryptoorch_breaker_open",
            "ray_cryptoorch_candle_lag_seconds",
        },
        labels={
            "ray_cryptoorch_orders_total": ('bot="7"', 'status="filled"'),
            "ray_cryptoorch_risk_checks_total": ('limit="max_drawdown_pct"',),
            "ray_cryptoorch_equity": ('bot="7"',),
            "ray_cryptoorch_breaker_open": ('exchange="binance"',),
        },
    )
    # Bot actors and the risk actor of earlier tests export the same series (other bots, other
    # limits): pick this recorder's lines by their labels.
    (orders,) = _labelled(found["ray_cryptoorch_orders_total"], 'bot="7"', 'status="filled"')
    assert orders.endswith(" 2.0")
    assert _labelled(
        found["ray_cryptoorch_risk_checks_total"], 'outcome="denied"', 'limit="max_drawdown_pct"'
    )
    (equity,) = _labelled(found["ray_cryptoorch_equity"], 'bot="7"')
    assert equity.endswith(" 10250.5")
    (breaker,) = _labelled(found["ray_cryptoorch_breaker_open"], 'exchange="binance"')
    assert breaker.endswith(" 1.0")
    counts = [
        float(m.group(1))
        for ln in found["ray_cryptoorch_risk_check_seconds_count"]
        if (m := re.search(r" (\S+)$", ln)) is not None
    ]
    assert max(counts) >= 2.0  # the risk actor's own checks may share the series
    status = ray_status()
    assert status["metrics"] == url


def test_dashboard_options_follow_the_settings() -> None:
    on = dashboard_options(Settings(ray_dashboard=True, ray_dashboard_port=9265))
    assert Settings().ray_dashboard is False  # `serve` turns it on; libraries and tests do not
    off = dashboard_options(Settings(ray_dashboard=False, ray_metrics_port=9266))
    assert on["include_dashboard"] is True
    assert on["dashboard_host"] == "127.0.0.1"  # the dashboard has no login: loopback only
    assert on["dashboard_port"] == 9265
    assert off == {"include_dashboard": False, "_metrics_export_port": 9266}


@pytest.mark.parametrize("value", [0, 70000])
def test_ports_are_validated(value: int) -> None:
    with pytest.raises(ValueError, match="ray_dashboard_port"):
        Settings(ray_dashboard_port=value)
