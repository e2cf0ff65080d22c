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

``GET /api/bots/{id}/equity`` is the one API read the bot page needed that did not exist: the
bot's equity snapshots, oldest first, for its owner only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from sqlalchemy import select

from cryptoorchestrator.api.deps import BotsDep, ContextDep
from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.storage.models import EquitySnapshot

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
        ``/api/bots/{id}/equity``.
    """
    modules = node_modules if node_modules is not None else WEB_DIR / "node_modules"
    assets = load_assets(root)
    vendor_cache: dict[str, Asset] = {}
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        """The dashboard's page."""
        page = assets.get("index.html")
        if page is None:
            raise NotFoundError("the dashboard's files are not installed with this package")
        return _answer(request, page)

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

    return router


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch of a stored (naive UTC or aware) datetime."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


router = make_router()
