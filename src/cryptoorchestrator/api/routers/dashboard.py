"""The web dashboard: ``/`` (the page), ``/assets/*`` (its modules, styles, icon), ``/vendor/*``.

The dashboard has no build step: native ES modules and plain CSS shipped inside the package
(``cryptoorchestrator/api/dashboard/``), read once into memory, so only the files that exist
there can ever be served (no path from a request reaches the file system).  Third-party code
comes from the npm registry, pinned by ``web/package-lock.json`` and installed by
``scripts/bootstrap.sh`` into ``web/node_modules``; the head node serves it from there.  When
Node.js was missing at set-up, ``/dashboard/config.json`` says so and the page shows why the
chart is missing instead of requesting a file that is not there.

The pages use the API under ``/api`` and ``/ws/bots`` like any other client: the same tokens,
rate limits and security headers (a strict CSP of ``'self'`` for the page, see
:data:`~cryptoorchestrator.api.middleware.DASHBOARD_CSP`).

Reads the pages needed that the API did not have, each for its owner only:

* ``GET /api/bots/{id}/equity``: the bot's equity snapshots, oldest first.
* ``GET /api/bots/{id}/chart``: the bot's market and every fill in one columnar answer, so the
  bot page draws years of candles with thousands of markers from one request.
* ``GET /api/dashboard/bot-alerts``: warnings and errors per bot (its log's WARNING and
  ERROR/CRITICAL lines and its risk events) since a time, for every bot of the overview in
  one request.
* ``GET /api/optimizations/{id}/folds``: the folds of the walk-forward analysis a study
  belongs to (each fold's study is stored as a run named ``<name>:fold<k>``), in fold order.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from pydantic_core import to_json
from sqlalchemy import func, select

from cryptoorchestrator.api.deps import BotsDep, ContextDep, RunsDep
from cryptoorchestrator.api.routers.params import RunId
from cryptoorchestrator.api.schemas import Text
from cryptoorchestrator.platform.data.store import MANIFEST, OhlcvStore, seed_bundled
from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.logs import tail
from cryptoorchestrator.platform.services.market_sources import stored_symbols
from cryptoorchestrator.platform.storage.models import (
    EquitySnapshot,
    OptimizationRun,
    RiskEvent,
    Trade,
)

#: The dashboard's own files (in the package).
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
#: ``web/`` of a source checkout (``pip install -e``), where ``npm ci`` puts ``node_modules``.
WEB_DIR = Path(__file__).resolve().parents[4] / "web"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    """A file the dashboard serves: its bytes, media type and entity tag."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, suffix: str) -> Asset:
        """Wrap ``body`` with the media type of ``suffix`` and a content hash as its ETag."""
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, _TYPES.get(suffix, "application/octet-stream"), f'"{digest}"')


@dataclass(frozen=True)
class Vendor:
    """A third-party file installed by npm: the URL it is served at and where it lies."""

    url: str
    path: Path
    package: str


#: Third-party files the dashboard may load, by URL name; each from its npm package.
VENDOR = {
    "lightweight-charts.mjs": Vendor(
        "/vendor/lightweight-charts.mjs",
        Path("lightweight-charts/dist/lightweight-charts.standalone.production.mjs"),
        "lightweight-charts",
    ),
    "lightweight-charts.LICENSE.txt": Vendor(
        "/vendor/lightweight-charts.LICENSE.txt",
        Path("lightweight-charts/LICENSE"),
        "lightweight-charts",
    ),
}


def load_assets(root: Path = DASHBOARD_DIR) -> dict[str, Asset]:
    """Read every servable file under ``root`` into memory, keyed by its relative POSIX path.

    Parameters
    ----------
    root
        The dashboard's folder.

    Returns
    -------
    dict[str, Asset]
        ``{"index.html": ..., "app.css": ..., "js/main.js": ...}``; files of other types
        (and dot files) are left out.
    """
    assets: dict[str, Asset] = {}
    if not root.is_dir():
        return assets
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.suffix not in _TYPES:
            continue
        if any(part.startswith((".", "_")) for part in relative.parts):
            continue
        assets[relative.as_posix()] = Asset.of(path.read_bytes(), path.suffix)
    return assets


def with_preloads(page: Asset, assets: dict[str, Asset], charts: bool) -> Asset:
    """Return ``page`` with a ``<link rel="modulepreload">`` per module of ``assets``, and one
    for the chart library when ``charts``, before its first module script.

    Without them the browser finds the modules one import level at a time, each a round trip
    (their revalidation included); with them it asks for all at once, and the bot page's chart
    library is already in when the page asks for it.
    """
    urls = [f"/assets/{path}" for path in sorted(assets) if path.endswith(".js")]
    if charts:
        urls.append(VENDOR["lightweight-charts.mjs"].url)
    links = "".join(f'<link rel="modulepreload" href="{url}">\n  ' for url in urls)
    marker = b'<script type="module"'
    if marker not in page.body:
        return page
    return Asset.of(page.body.replace(marker, links.encode() + marker, 1), ".html")


def vendor_status(node_modules: Path) -> dict[str, Any]:
    """Return which vendor files are installed, with their versions or why they are missing.

    Parameters
    ----------
    node_modules
        ``web/node_modules``.

    Returns
    -------
    dict[str, Any]
        ``{"lightweightCharts": {"url", "version", "license"} | None, "reason": str | None}``.
    """
    chart = VENDOR["lightweight-charts.mjs"]
    manifest = node_modules / chart.package / "package.json"
    if not (node_modules / chart.path).is_file() or not manifest.is_file():
        return {
            "lightweightCharts": None,
            "reason": "the chart library is not installed on the head node: install Node.js "
            "and npm, then run scripts/bootstrap.sh (its 'npm ci' step fetches it)",
        }
    try:
        version = str(json.loads(manifest.read_text()).get("version", ""))
    except ValueError:
        version = ""
    return {
        "lightweightCharts": {
            "url": chart.url,
            "version": version,
            "license": VENDOR["lightweight-charts.LICENSE.txt"].url,
        },
        "reason": None,
    }


def _answer(request: Request, asset: Asset, cache: str = "no-cache") -> Response:
    """The asset, or 304 when the browser's copy (``If-None-Match``) is current.

    ``no-cache`` makes browsers revalidate each load (one cheap 304), so an upgraded head node
    is never paired with stale modules.
    """
    headers = {"ETag": asset.etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def make_router(
    root: Path = DASHBOARD_DIR, node_modules: Path | None = None
) -> APIRouter:  # the factory keeps tests free to point at other folders
    """Build the dashboard's router.

    Parameters
    ----------
    root
        The dashboard's own files.
    node_modules
        Where npm installed the vendor packages; ``web/node_modules`` of the checkout.

    Returns
    -------
    APIRouter
        Routes ``/``, ``/assets/{path}``, ``/vendor/{name}``, ``/dashboard/config.json`` and
        the reads of the module's docstring.
    """
    modules = node_modules if node_modules is not None else WEB_DIR / "node_modules"
    assets = load_assets(root)
    vendor_cache: dict[str, Asset] = {}
    candle_cache: dict[tuple[str, str, str, int, int], tuple[bytes, int]] = {}
    router = APIRouter()

    pages: dict[bool, Asset] = {}

    @router.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        """The dashboard's page, naming every module it will load (and the chart library when
        it is installed) for the browser to fetch at once."""
        page = assets.get("index.html")
        if page is None:
            raise NotFoundError("the dashboard's files are not installed with this package")
        charts = (modules / VENDOR["lightweight-charts.mjs"].path).is_file()
        found = pages.get(charts)
        if found is None:
            found = pages[charts] = with_preloads(page, assets, charts)
        return _answer(request, found)

    @router.get("/assets/{path:path}", include_in_schema=False)
    def asset(request: Request, path: str) -> Response:
        """One of the dashboard's modules, styles or icons."""
        found = assets.get(path)
        if found is None or path == "index.html":
            raise NotFoundError(f"no dashboard asset {path!r}")
        return _answer(request, found)

    @router.get("/vendor/{name}", include_in_schema=False)
    def vendor(request: Request, name: str) -> Response:
        """A third-party file installed by npm (read once, then served from memory)."""
        entry = VENDOR.get(name)
        if entry is None:
            raise NotFoundError(f"no vendor file {name!r}; known: {', '.join(sorted(VENDOR))}")
        found = vendor_cache.get(name)
        if found is None:
            file = modules / entry.path
            if not file.is_file():
                raise NotFoundError(
                    f"{entry.package} is not installed: run scripts/bootstrap.sh (needs npm)"
                )
            found = vendor_cache[name] = Asset.of(file.read_bytes(), Path(name).suffix)
        return _answer(request, found)

    @router.get("/dashboard/config.json", include_in_schema=False)
    def config(context: ContextDep) -> dict[str, Any]:
        """What the page needs to know about this head node (vendor files, Ray's dashboard)."""
        settings = context.settings
        return {
            **vendor_status(modules),
            "rayDashboard": {
                "enabled": bool(settings.ray_dashboard),
                "port": settings.ray_dashboard_port,
            },
        }

    @router.get("/api/bots/{bot_id}/equity", tags=["bots"])
    def bot_equity(
        bot_id: Annotated[int, PathParam(ge=1, le=2_147_483_647)],
        bots: BotsDep,
        limit: Annotated[int, Query(ge=1, le=5000)] = 2000,
    ) -> dict[str, Any]:
        """Return the bot's latest ``limit`` equity snapshots, oldest first (its owner only)."""
        bot = bots.get(bot_id)  # 404 for anyone else's bot
        rows = bots.session.execute(
            select(EquitySnapshot.timestamp, EquitySnapshot.equity)
            .where(EquitySnapshot.bot_id == bot.id)
            .order_by(EquitySnapshot.timestamp.desc(), EquitySnapshot.id.desc())
            .limit(limit)
        ).all()
        points = [{"timestamp": _ms(ts), "equity": str(equity)} for ts, equity in reversed(rows)]
        return {"botId": bot.id, "points": points}

    @router.get("/api/bots/{bot_id}/chart", tags=["bots"])
    def bot_chart(
        bot_id: Annotated[int, PathParam(ge=1, le=2_147_483_647)],
        bots: BotsDep,
        context: ContextDep,
        exchange: Annotated[Text, Query(max_length=40)] = "binance",
        bars: Annotated[int, Query(ge=1, le=MAX_CHART_BARS)] = MAX_CHART_BARS,
        fills: Annotated[int, Query(ge=1, le=MAX_CHART_FILLS)] = MAX_CHART_FILLS,
    ) -> Response:
        """Return the bot's latest ``bars`` candles and latest ``fills`` fills, in columns.

        ``{"candles": {"timestamp": [ms], "open", "high", "low", "close": [...]}, "botId",
        "exchange", "symbol", "timeframe", "fills": {"id", "timestamp": [ms], "side", "price",
        "amount": [...]}, "truncated": {"candles": bool, "fills": bool}}``, oldest first; the
        candles are empty when no market data is stored for the bot's pair (or when the
        exchange is unknown: ``exchange`` picks which exchange's candles, ``binance`` by
        default, as ``GET /api/markets/{symbol}/ohlcv``).
        """
        bot = bots.get(bot_id)  # 404 for anyone else's bot
        candles, total = _candles(OhlcvStore(context.settings.data_dir), exchange, bot, bars)
        rows = bots.session.execute(
            select(Trade.id, Trade.timestamp, Trade.side, Trade.price, Trade.amount)
            .where(Trade.bot_id == bot.id)
            .order_by(Trade.timestamp.desc(), Trade.id.desc())
            .limit(fills + 1)
        ).all()
        kept = list(reversed(rows[:fills]))
        rest = {
            "botId": bot.id,
            "exchange": exchange,
            "symbol": bot.trading_pair,
            "timeframe": bot.timeframe,
            "fills": {
                "id": [r[0] for r in kept],
                "timestamp": [_ms(r[1]) for r in kept],
                "side": [r[2] for r in kept],
                "price": [str(r[3]) for r in kept],
                "amount": [str(r[4]) for r in kept],
            },
            "truncated": {"candles": total > bars, "fills": len(rows) > fills},
        }
        # The candles' JSON comes ready from the cache: spliced in, not encoded again.
        body = b"".join((b'{"candles":', candles, b",", to_json(rest)[1:]))
        return Response(body, media_type="application/json")

    def _candles(store: OhlcvStore, exchange: str, bot: Any, bars: int) -> tuple[bytes, int]:
        """The JSON columns of the bot market's latest ``bars`` candles, and how many exist.

        Kept per dataset version (its manifest's mtime, rewritten by every write), so a page
        load does not read and encode years of candles again while nothing changed.
        """
        pair, timeframe = bot.trading_pair, bot.timeframe
        if pair not in stored_symbols(store, exchange):
            return _NO_CANDLES, 0
        if not store.exists(exchange, pair, timeframe):
            seed_bundled(store, exchange, pair, timeframe)
        manifest = store.dataset_dir(exchange, pair, timeframe) / MANIFEST
        try:
            version = manifest.stat().st_mtime_ns
        except OSError:
            return _NO_CANDLES, 0
        key = (exchange, pair, timeframe, bars, version)
        found = candle_cache.get(key)
        if found is None:
            table = store.read(exchange, pair, timeframe, columns=["timestamp", *_OHLC])
            total = table.num_rows
            table = table.slice(max(0, total - bars))
            encoded = to_json({name: table.column(name).to_pylist() for name in table.column_names})
            found = candle_cache[key] = (encoded, total)
            while len(candle_cache) > _CANDLE_CACHE:
                candle_cache.pop(next(iter(candle_cache)))
        return found

    @router.get("/api/dashboard/bot-alerts", tags=["bots"])
    def bot_alerts(
        bots: BotsDep,
        context: ContextDep,
        hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
    ) -> dict[str, Any]:
        """Count each listed bot's warnings and errors of the last ``hours``.

        Warnings: WARNING lines of the bot's log and its risk events other than breaches
        (denials, kill switches); errors: ERROR and CRITICAL lines and limit breaches.  The
        log is read from its end, at most :data:`ALERT_LOG_LINES` lines per bot.
        """
        since = datetime.now(UTC) - timedelta(hours=hours)
        listed = bots.list_bots(limit=500).items
        ids = [b.id for b in listed]
        counts = {i: {"botId": i, "warnings": 0, "errors": 0} for i in ids}
        if ids:
            events = bots.session.execute(
                select(RiskEvent.bot_id, RiskEvent.kind, func.count())
                .where(RiskEvent.bot_id.in_(ids), RiskEvent.created_at >= since)
                .group_by(RiskEvent.bot_id, RiskEvent.kind)
            ).all()
            for bot_id, kind, n in events:
                if bot_id is None:
                    continue
                counts[bot_id]["errors" if kind == "breach" else "warnings"] += int(n)
        for bot_id in ids:
            path = context.settings.log_dir / f"bot_{bot_id}.log"
            warnings, errors = count_log_alerts(tail(path, ALERT_LOG_LINES), since)
            counts[bot_id]["warnings"] += warnings
            counts[bot_id]["errors"] += errors
        return {"since": since.isoformat(), "items": list(counts.values())}

    @router.get("/api/optimizations/{run_id}/folds", tags=["runs"])
    def optimization_folds(run_id: RunId, runs: RunsDep) -> dict[str, Any]:
        """Return the walk-forward folds the study belongs to (none for a plain study).

        Each fold: ``{"fold", "runId", "status", "nTrials", "bestParams", "bestValue"}`` (the
        in-sample best of the fold's training window).
        """
        run = runs.optimization(run_id)  # 404 for anyone else's study
        name = str((run.config or {}).get("name") or "")
        found = _FOLD.fullmatch(name)
        if found is None:
            return {"runId": run.id, "walkForward": False, "name": name, "folds": []}
        siblings = runs.session.scalars(
            select(OptimizationRun).where(
                OptimizationRun.user_id == run.user_id,
                OptimizationRun.strategy == run.strategy,
                OptimizationRun.objective == run.objective,
            )
        ).all()
        folds: dict[int, OptimizationRun] = {}
        for other in siblings:
            match = _FOLD.fullmatch(str((other.config or {}).get("name") or ""))
            if match is None or match.group(1) != found.group(1):
                continue
            index = int(match.group(2))
            # A re-run of a fold is a new run under the same name: the latest one counts.
            if index not in folds or other.created_at > folds[index].created_at:
                folds[index] = other
        return {
            "runId": run.id,
            "walkForward": True,
            "name": found.group(1),
            "objective": run.objective,
            "folds": [
                {
                    "fold": index,
                    "runId": f.id,
                    "status": f.status,
                    "nTrials": f.n_trials,
                    "bestParams": f.best_params,
                    "bestValue": f.best_value,
                }
                for index, f in sorted(folds.items())
            ],
        }

    return router


#: Most candles and fills ``/api/bots/{id}/chart`` returns (the bundled 1h history is 58k bars).
MAX_CHART_BARS = 100_000
MAX_CHART_FILLS = 20_000
#: Log lines read, from the end, per bot for its alert counts.
ALERT_LOG_LINES = 2000
_OHLC = ("open", "high", "low", "close")
_NO_CANDLES = b'{"timestamp":[],"open":[],"high":[],"low":[],"close":[]}'
#: Candle answers kept (one per market and length shown).
_CANDLE_CACHE = 8
#: A walk-forward fold's study name (platform/optimize/walkforward.py): ``<name>:fold<k>``.
_FOLD = re.compile(r"(.+):fold(\d{1,4})")
_ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})


def count_log_alerts(lines: list[str], since: datetime) -> tuple[int, int]:
    """Count the WARNING and the ERROR/CRITICAL records at or after ``since`` in JSON log lines.

    Lines that are not JSON records (or carry no readable time) are not counted.

    Returns
    -------
    tuple[int, int]
        ``(warnings, errors)``.
    """
    warnings = errors = 0
    for line in lines:
        try:
            record = json.loads(line)
            level = str(record.get("level", ""))
            if level != "WARNING" and level not in _ERROR_LEVELS:
                continue
            at = datetime.fromisoformat(str(record["time"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if (at if at.tzinfo else at.replace(tzinfo=UTC)) < since:
            continue
        if level == "WARNING":
            warnings += 1
        else:
            errors += 1
    return warnings, errors


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch of a stored (naive UTC or aware) datetime."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


router = make_router()
