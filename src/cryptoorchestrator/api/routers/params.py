"""Path and query parameters, and response notes, that several routers share."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query

from cryptoorchestrator.api.schemas import Text

#: The ``responses`` note of a route that acts through the cluster facade.
NOT_AVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the cluster layer is not available"}
}
#: How many records a list returns.
Limit = Annotated[int, Query(ge=1, le=500)]
#: Run ids are UUIDs (36 characters); the check keeps NUL characters away from PostgreSQL.
RunId = Annotated[Text, Path(max_length=36)]
