"""The result store: immutable content-addressed results, saved views, job records.

Every write is one transaction, so a crash (even ``kill -9``) leaves either the whole row or
nothing. SQLite runs in WAL mode (readers never block the writer; ``synchronous=NORMAL`` is
safe against process crashes). Results are immutable: a second ``put`` of an id is a no-op.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from kcircuits import __version__
from kcircuits.errors import BadRequest, NotFound
from kcircuits.store import ids
from kcircuits.store.models import JobRow, ResultRow, ViewRow

log = logging.getLogger(__name__)

#: Keys the store adds to a result on the way out (never stored inside the result JSON).
ADDED_KEYS = ("id", "provenance", "cached", "saved", "title")
MAX_VIEW_STATE_BYTES = 16_384
MAX_TITLE_CHARS = 200
JOB_WRITE_INTERVAL_S = 1.0


def iso(ts: float) -> str:
    """Epoch seconds as an ISO-8601 UTC string."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _params_of(request: dict[str, Any]) -> dict[str, Any]:
    if isinstance(request.get("params"), dict):
        return request["params"]
    return {k: v for k, v in request.items() if k not in ("model", "prompt", "method")}


def _text(value: Any) -> str | None:
    return None if value is None else str(value).replace("\x00", "")


class Store:
    """Persistence over one SQLAlchemy engine. Thread-safe (a session per call)."""

    def __init__(self, engine: Engine, dtype: str = "float32", device: str = "cpu"):
        self.engine = engine
        self.dtype = dtype
        self._device = device
        self._device_class: str | None = None
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._job_writes: dict[str, tuple[float, str]] = {}
        #: Results computed (store misses) by this process: the restart test reads it.
        self.computed_results = 0
        self.cache_hits = 0

    # ----- ids and provenance -------------------------------------------------------------
    @property
    def device_class(self) -> str:
        if self._device_class is None:
            self._device_class = ids.device_class(self._device)
        return self._device_class

    def key(self, kind: str, request: dict[str, Any], model_revision: str) -> dict[str, Any]:
        """The id input for a request (see ids.py)."""
        if not isinstance(request, dict) or not request.get("model"):
            raise BadRequest("a stored request must name its model")
        if not kind or not isinstance(kind, str):
            raise BadRequest("a stored result needs a kind")
        ids.canonical_json(request)  # refuses NaN / non-string keys early
        return {
            "schema_version": ids.SCHEMA_VERSION,
            "kind": kind,
            "model": request["model"],
            "revision": model_revision,
            "libraries": ids.library_versions(),
            "request": json.loads(json.dumps(request)),  # plain JSON types (tuples -> lists)
            "dtype": request.get("dtype", self.dtype),
            "device_class": request.get("device_class", self.device_class),
        }

    def content_id(self, kind: str, request: dict[str, Any], model_revision: str) -> str:
        """sha256 hex of the canonical JSON of the id input."""
        return ids.hash_key(self.key(kind, request, model_revision))

    def provenance(self, kind: str, request: dict[str, Any], model_revision: str) -> dict[str, Any]:
        """How a result was made: the id input plus method, params, code version and time."""
        key = self.key(kind, request, model_revision)
        return {**key, "method": request.get("method"), "params": _params_of(request),
                "prompt": request.get("prompt"), "code_version": __version__,
                "created_at": iso(time.time())}

    # ----- results ------------------------------------------------------------------------
    def get(self, result_id: str) -> dict[str, Any] | None:
        """The stored result with ``id``, ``provenance``, ``saved`` and ``title`` added, or None."""
        if not ids.is_valid_id(result_id):
            return None
        with self._session() as session:
            row = session.get(ResultRow, result_id)
            return None if row is None else self._out(row)

    def exists(self, result_id: str) -> bool:
        if not ids.is_valid_id(result_id):
            return False
        with self._session() as session:
            return session.scalar(select(ResultRow.id).where(ResultRow.id == result_id)) is not None

    @staticmethod
    def _out(row: ResultRow) -> dict[str, Any]:
        data = json.loads(row.result)
        data.update(id=row.id, provenance=row.provenance, saved=bool(row.saved), title=row.title)
        return data

    def put(self, result_id: str, kind: str, result: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
        """Store ``result`` under ``result_id`` (no-op returning the stored one if it exists)."""
        if not ids.is_valid_id(result_id):
            raise BadRequest("result ids are 64 lowercase hex characters")
        existing = self.get(result_id)
        if existing is not None:
            return existing
        body = {k: v for k, v in result.items() if k not in ADDED_KEYS}
        request = provenance.get("request") if isinstance(provenance.get("request"), dict) else {}

        def pick(name: str) -> str | None:  # search columns only: PostgreSQL text refuses NUL
            value = provenance.get(name) or request.get(name) or body.get(name)
            return _text(value)

        params = provenance.get("params") if isinstance(provenance.get("params"), dict) else body.get("params")
        row = ResultRow(id=result_id, kind=kind, model=pick("model"), prompt=pick("prompt"),
                        method=pick("method"), params=params or {},
                        result=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                        provenance=provenance, created_at=time.time(), saved=False, title=None)
        try:
            with self._session.begin() as session:
                session.add(row)
        except IntegrityError:  # a concurrent put of the same id won: results are immutable
            log.debug("result %s already stored", result_id)
        stored = self.get(result_id)
        if stored is None:
            raise RuntimeError(f"result {result_id} vanished after insert")
        return stored

    def _lock(self, result_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(result_id, threading.Lock())

    def get_or_compute(self, kind: str, request: dict[str, Any], model_revision: str,
                       compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result for this request, computing and storing it on a miss.

        Adds ``id``, ``provenance`` and ``cached`` (True when ``compute`` was not called).
        Concurrent identical requests in this process compute once.
        """
        result_id = self.content_id(kind, request, model_revision)
        try:
            with self._lock(result_id):
                stored = self.get(result_id)
                if stored is not None:
                    self.cache_hits += 1
                    return {**stored, "cached": True}
                result = compute()
                self.computed_results += 1
                provenance = self.provenance(kind, request, model_revision)
                try:
                    stored = self.put(result_id, kind, result, provenance)
                except SQLAlchemyError:  # the answer still goes out; only its permalink is missing
                    log.exception("could not store result %s", result_id)
                    stored = {**{k: v for k, v in result.items() if k not in ADDED_KEYS},
                              "id": result_id, "provenance": provenance, "saved": False, "title": None}
        finally:
            with self._locks_guard:
                self._locks.pop(result_id, None)
        return {**stored, "cached": False}

    def import_result(self, data: dict[str, Any]) -> dict[str, Any]:
        """Store an exported result after checking that its id matches its provenance."""
        if not isinstance(data, dict) or not isinstance(data.get("provenance"), dict):
            raise BadRequest("not a kcircuits result export (no provenance)")
        provenance = data["provenance"]
        expected = ids.hash_key(ids.key_from_provenance(provenance))
        if data.get("id") != expected:
            raise BadRequest("the file's id does not match its provenance (edited or corrupt file)")
        return self.put(expected, provenance["kind"], data, provenance)

    def search(self, model: str | None = None, method: str | None = None, kind: str | None = None,
               q: str | None = None, saved: bool | None = None, limit: int = 50,
               offset: int = 0) -> dict[str, Any]:
        """Recent results first: ``{"items": [summary], "total": matches}``."""
        conditions = []
        if model:
            conditions.append(ResultRow.model == model)
        if method:
            conditions.append(ResultRow.method == method)
        if kind:
            conditions.append(ResultRow.kind == kind)
        if saved is not None:
            conditions.append(ResultRow.saved == bool(saved))
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(or_(*(col.ilike(pattern, escape="\\") for col in
                                    (ResultRow.prompt, ResultRow.model, ResultRow.method, ResultRow.title))))
        limit = max(1, min(int(limit), 500))
        offset = max(0, int(offset))
        columns = (ResultRow.id, ResultRow.kind, ResultRow.model, ResultRow.prompt, ResultRow.method,
                   ResultRow.created_at, ResultRow.saved, ResultRow.title)
        with self._session() as session:
            total = session.scalar(select(func.count()).select_from(ResultRow).where(*conditions))
            rows = session.execute(select(*columns).where(*conditions)
                                   .order_by(ResultRow.created_at.desc(), ResultRow.id)
                                   .limit(limit).offset(offset)).all()
        items = [{"id": r.id, "kind": r.kind, "model": r.model, "prompt": r.prompt, "method": r.method,
                  "created_at": iso(r.created_at), "saved": bool(r.saved), "title": r.title} for r in rows]
        return {"items": items, "total": int(total or 0)}

    def save(self, result_id: str, title: str | None = None) -> dict[str, Any]:
        """Mark a result saved (optionally titled): ``{"id", "saved": True, "title"}``."""
        if title is not None and len(title) > MAX_TITLE_CHARS:
            raise BadRequest(f"title: at most {MAX_TITLE_CHARS} characters")
        if not ids.is_valid_id(result_id):
            raise NotFound("no result with that id")
        with self._session.begin() as session:
            row = session.get(ResultRow, result_id)
            if row is None:
                raise NotFound("no result with that id")
            row.saved = True
            if title is not None:
                row.title = _text(title)
            title = row.title
        return {"id": result_id, "saved": True, "title": title}

    def count(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(ResultRow)) or 0)

    def check_integrity(self) -> list[str]:
        """Ids of rows whose JSON does not parse or whose id differs from its provenance's hash."""
        bad = []
        with self._session() as session:
            for row in session.execute(select(ResultRow.id, ResultRow.result, ResultRow.provenance)):
                try:
                    json.loads(row.result)
                    if ids.hash_key(ids.key_from_provenance(row.provenance)) != row.id:
                        bad.append(row.id)
                except (ValueError, TypeError, BadRequest):
                    bad.append(row.id)
        return bad

    # ----- views --------------------------------------------------------------------------
    def put_view(self, result_id: str, state: dict[str, Any]) -> str:
        """Store a view state for a result; returns its short code (same state -> same code)."""
        if not isinstance(state, dict):
            raise BadRequest("state: must be a JSON object")
        text = ids.canonical_json({"result_id": result_id, "state": state})
        if len(text.encode()) > MAX_VIEW_STATE_BYTES:
            raise BadRequest(f"state: at most {MAX_VIEW_STATE_BYTES} bytes")
        if self.get(result_id) is None:
            raise NotFound("no result with that id")
        digest = hashlib.sha256(text.encode()).digest()
        short = base64.b32encode(digest).decode().lower()[:12]
        try:
            with self._session.begin() as session:
                if session.get(ViewRow, short) is None:
                    session.add(ViewRow(short=short, result_id=result_id, state=state, created_at=time.time()))
        except IntegrityError:  # the same view stored concurrently
            pass
        return short

    def get_view(self, short: str) -> dict[str, Any] | None:
        """``{"result_id", "state"}`` for a short code, or None."""
        if not isinstance(short, str) or not short.isalnum() or len(short) > 16:
            return None
        with self._session() as session:
            row = session.get(ViewRow, short)
            return None if row is None else {"result_id": row.result_id, "state": row.state}

    # ----- jobs ---------------------------------------------------------------------------
    def record_job(self, job: dict[str, Any]) -> None:
        """Upsert a job's public dict; progress-only updates are written at most once a second."""
        job_id, status = str(job["id"]), str(job.get("status", "queued"))
        now = time.monotonic()
        last = self._job_writes.get(job_id)
        terminal = status in ids.TERMINAL_JOB_STATES
        if last is not None and last[1] == status and not terminal and now - last[0] < JOB_WRITE_INTERVAL_S:
            return
        result = job.get("result")
        values = dict(
            kind=str(job.get("kind", "")), status=status, progress=float(job.get("progress") or 0.0),
            message=job.get("message"), params=job.get("params"), error=job.get("error"),
            result_id=result.get("id") if isinstance(result, dict) else job.get("result_id"),
            created_at=float(job.get("created_at", job.get("createdAt")) or time.time()),
            finished_at=job.get("finished_at", job.get("finishedAt")))
        for attempt in range(2):
            try:
                with self._session.begin() as session:
                    row = session.get(JobRow, job_id)
                    if row is None:
                        session.add(JobRow(id=job_id, **values))
                    else:
                        for name, value in values.items():
                            setattr(row, name, value)
                break
            except IntegrityError:  # inserted concurrently: update it on the second pass
                continue
            except SQLAlchemyError:  # a job must never fail because its record could not be written
                log.exception("could not record job %s (attempt %d)", job_id, attempt + 1)
                return
        if terminal:
            self._job_writes.pop(job_id, None)
        else:
            self._job_writes[job_id] = (now, status)

    def interrupt_orphaned_jobs(self) -> int:
        """Mark every job recorded as queued, running or cancelling as ``interrupted``: called on
        start, when no job of an earlier process can still be alive. Returns how many."""
        now = time.time()
        with self._session.begin() as session:
            rows = session.scalars(select(JobRow).where(JobRow.status.in_(("queued", "running", "cancelling")))).all()
            for row in rows:
                row.error = {"type": "interrupted",
                             "message": f"the server stopped while this job was {row.status}; start it again"}
                row.status, row.finished_at, row.message = "interrupted", now, "interrupted by a server restart"
        return len(rows)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """The last recorded state of a job, or None."""
        if not isinstance(job_id, str) or len(job_id) > 64:
            return None
        with self._session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return None
            return {"id": row.id, "kind": row.kind, "params": row.params, "status": row.status,
                    "progress": row.progress, "message": row.message, "error": row.error,
                    "result_id": row.result_id, "created_at": row.created_at, "finished_at": row.finished_at}

    def close(self) -> None:
        self.engine.dispose()

