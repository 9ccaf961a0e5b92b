"""Tables (SQLAlchemy 2 declarative): computed results, saved views, jobs.

The schema itself is created by the Alembic migrations in ``migrations/versions``; these classes
mirror it for queries (a test checks that the migrated database matches them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ResultRow(Base):
    """One immutable computed result (circuit, lens trace, edit comparison, relation table).

    ``result`` is the JSON text of the result; ``provenance`` holds the id input (see ids.py).
    Only ``saved`` and ``title`` change after insert.
    """

    __tablename__ = "results"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[Any] = mapped_column(JSON, nullable=False)
    result: Mapped[str] = mapped_column(Text)
    provenance: Mapped[Any] = mapped_column(JSON, nullable=False)
    created_at: Mapped[float] = mapped_column(Float)
    saved: Mapped[bool] = mapped_column(Boolean, default=False)
    title: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_results_created_at", "created_at"),
        Index("ix_results_model", "model"),
        Index("ix_results_kind", "kind"),
    )


class ViewRow(Base):
    """A long view state stored server-side under a short code (``/v/{short}``)."""

    __tablename__ = "views"

    short: Mapped[str] = mapped_column(String(16), primary_key=True)
    result_id: Mapped[str] = mapped_column(String(64), ForeignKey("results.id"))
    state: Mapped[Any] = mapped_column(JSON, nullable=False)
    created_at: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    """The last known state of a job (status, progress, error, the id of its stored result)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    result_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
