"""integrity_findings: the quarantine of rows that broke an integrity rule (``db check``)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cryptoorchestrator.platform.storage.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integrity_findings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("table_name", sa.String(length=60), nullable=False),
        sa.Column("row_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("found_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_findings")),
    )
    with op.batch_alter_table("integrity_findings", schema=None) as batch_op:
        batch_op.create_index("ix_integrity_findings_open", ["resolved_at", "kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("integrity_findings", schema=None) as batch_op:
        batch_op.drop_index("ix_integrity_findings_open")
    op.drop_table("integrity_findings")
