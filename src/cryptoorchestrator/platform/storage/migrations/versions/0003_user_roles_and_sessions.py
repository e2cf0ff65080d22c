"""users: roles instead of is_admin, the last TOTP step used, an epoch revoking access tokens

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="trader")
        )
        batch_op.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("auth_epoch", sa.Integer(), nullable=False, server_default="0")
        )
    users = sa.table("users", sa.column("id"), sa.column("is_admin"), sa.column("role"))
    op.execute(users.update().where(users.c.is_admin == sa.true()).values(role="admin"))
    # The first account of an existing installation is its operator, as on a new one.
    first = sa.select(sa.func.min(users.c.id)).scalar_subquery()
    has_admin = sa.exists().where(users.c.role == "admin")
    op.execute(users.update().where(users.c.id == first, ~has_admin).values(role="admin"))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("is_admin")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    users = sa.table("users", sa.column("is_admin"), sa.column("role"))
    op.execute(users.update().where(users.c.role == "admin").values(is_admin=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("auth_epoch")
        batch_op.drop_column("role")
