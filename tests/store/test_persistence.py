"""Persistence suite (SQLite and PostgreSQL): migrations, round trips, immutability, search, views, jobs."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from kcircuits.errors import BadRequest, NotFound
from kcircuits.store import downgrade, hash_key, key_from_provenance, make_engine, upgrade
from kcircuits.store.core import ADDED_KEYS, Store

REV = "sha256:" + "ab" * 32

json_scalars = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ADDED_KEYS}


# ----- migrations ---------------------------------------------------------------------------
def test_migrations_from_empty_database(db_url):
    """Upgrading an empty database creates exactly the model's schema; re-running is a no-op."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from kcircuits.store.models import Base

    engine = make_engine(db_url)
    assert not {"results", "views", "jobs"} & set(inspect(engine).get_table_names())
    upgrade(engine)
    upgrade(engine)
    names = set(inspect(engine).get_table_names())
    assert {"results", "views", "jobs", "alembic_version"} <= names
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0001"
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    columns = {c["name"] for c in inspect(engine).get_columns("results")}
    assert {"id", "kind", "model", "prompt", "method", "params", "result", "provenance", "created_at",
            "saved", "title"} <= columns
    downgrade(engine, "base")
    assert not {"results", "views", "jobs"} & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert {"results", "views", "jobs"} <= set(inspect(engine).get_table_names())
    engine.dispose()


# ----- results ------------------------------------------------------------------------------
def test_round_trip_circuit(store, make_circuit, make_request):
    circuit = make_circuit(prompt='<script>alert("x")</script> The Eiffel Tower \u00e9\u4e2d\U0001f600 \x00 is in')
    circuit["metrics"]["tiny"] = 5e-324
    circuit["metrics"]["third"] = 0.1 + 0.2
    out = store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)
    assert out["cached"] is False and len(out["id"]) == 64
    again = store.get(out["id"])
    assert strip(again) == circuit
    assert json.dumps(strip(again), sort_keys=True) == json.dumps(circuit, sort_keys=True)
    assert again["provenance"] == out["provenance"]
    prov = out["provenance"]
    for name in ("model", "revision", "method", "params", "code_version", "libraries", "dtype",
                 "device_class", "created_at"):
        assert name in prov
    assert prov["revision"] == REV and prov["device_class"] == "cpu" and prov["libraries"]["torch"]
    assert hash_key(key_from_provenance(prov)) == out["id"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_round_trip_any_json(store, value):
    """Arbitrary JSON results come back equal (floats bit-exact, unicode, nesting)."""
    request = {"model": "tiny-gpt2", "prompt": "p", "method": "eap", "params": {"v": json.dumps(value)}}
    out = store.get_or_compute("lens", request, REV, lambda: value)
    assert strip(store.get(out["id"])) == {k: v for k, v in value.items() if k not in ADDED_KEYS}


def test_get_or_compute_calls_compute_once(store, make_circuit, make_request):
    circuit = make_circuit()
    calls = []

    def compute():
        calls.append(1)
        return circuit

    first = store.get_or_compute("circuit", make_request(circuit), REV, compute)
    second = store.get_or_compute("circuit", make_request(circuit), REV, compute)
    assert len(calls) == 1 and first["cached"] is False and second["cached"] is True
    assert first["id"] == second["id"] and strip(first) == strip(second)
    assert store.computed_results == 1 and store.cache_hits == 1


def test_concurrent_identical_requests_compute_once(store, make_circuit, make_request):
    circuit = make_circuit()
    calls, outs = [], []

    def compute():
        calls.append(1)
        return circuit

    threads = [threading.Thread(target=lambda: outs.append(
        store.get_or_compute("circuit", make_request(circuit), REV, compute))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(outs) == 6 and len({o["id"] for o in outs}) == 1


def test_concurrent_writers_all_land(store, make_circuit, make_request):
    def write(i):
        circuit = make_circuit(prompt=f"prompt {i}")
        store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 12 and store.check_integrity() == []


def test_results_are_immutable(store, make_circuit):
    circuit = make_circuit()
    prov = store.provenance("circuit", {"model": "tiny-gpt2", "prompt": "x"}, REV)
    rid = hash_key(key_from_provenance(prov))
    store.put(rid, "circuit", circuit, prov)
    other = dict(circuit, prompt="something else")
    assert strip(store.put(rid, "circuit", other, prov)) == circuit
    assert strip(store.get(rid)) == circuit


def test_put_rejects_bad_ids_and_get_ignores_them(store):
    with pytest.raises(BadRequest):
        store.put("../../etc/passwd", "circuit", {}, {})
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63, "0" * 10_000, ""):
        assert store.get(bad) is None


def test_check_integrity_flags_corrupt_rows(store, make_circuit, make_request):
    circuit = make_circuit()
    out = store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)
    other = make_circuit(prompt="second")
    out2 = store.get_or_compute("circuit", make_request(other), REV, lambda: other)
    assert store.check_integrity() == []
    with store.engine.begin() as conn:
        conn.execute(text("update results set result = '{\"trunc' where id = :id"), {"id": out["id"]})
    assert store.check_integrity() == [out["id"]]
    assert out2["id"] not in store.check_integrity()


def test_import_checks_the_id(store, db_url, tmp_path, make_circuit, make_request):
    """An export imports into another store under the same id; an edited file is refused."""
    circuit = make_circuit()
    exported = json.loads(json.dumps(store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)))
    other = Store(make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}"))
    upgrade(other.engine)
    assert strip(other.import_result(exported)) == circuit
    assert other.get(exported["id"])["provenance"] == exported["provenance"]
    tampered = json.loads(json.dumps(exported))
    tampered["provenance"]["request"]["prompt"] = "changed"
    with pytest.raises(BadRequest):
        other.import_result(tampered)
    with pytest.raises(BadRequest):
        other.import_result({"id": exported["id"], "nodes": []})
    other.close()


# ----- search and save ----------------------------------------------------------------------
def test_search_filters_and_pages(store, make_circuit, make_request):
    ids = {}
    for i, (model, method, prompt) in enumerate([("tiny-gpt2", "eap", "The Eiffel Tower is in"),
                                                  ("tiny-gpt2", "eap-ig", "Rome is the capital of"),
                                                  ("tiny-llama", "eap", "100% of_cats are"),
                                                  ("tiny-llama", "exact", "The Colosseum is in")]):
        circuit = dict(make_circuit(prompt=prompt), model=model, method=method)
        request = dict(make_request(circuit), model=model, method=method)
        ids[i] = store.get_or_compute("circuit", request, REV, lambda c=circuit: c)["id"]
    store.get_or_compute("lens", {"model": "tiny-gpt2", "prompt": "lens prompt"}, REV, lambda: {"layers": []})

    everything = store.search()
    assert everything["total"] == 5 and len(everything["items"]) == 5
    assert set(everything["items"][0]) == {"id", "kind", "model", "prompt", "method", "created_at", "saved", "title"}
    assert store.search(model="tiny-llama")["total"] == 2
    assert store.search(method="eap")["total"] == 2
    assert store.search(kind="lens")["total"] == 1
    assert [i["id"] for i in store.search(q="eiffel")["items"]] == [ids[0]]
    assert [i["id"] for i in store.search(q="100%")["items"]] == [ids[2]]
    assert store.search(q="%")["total"] == 1 and store.search(q="_")["total"] == 1
    assert store.search(q="eap-ig")["total"] == 1
    page1, page2 = store.search(limit=2), store.search(limit=2, offset=2)
    assert page1["total"] == 5 and len(page1["items"]) == 2
    assert not {i["id"] for i in page1["items"]} & {i["id"] for i in page2["items"]}

    saved = store.save(ids[1], "Rome circuit")
    assert saved == {"id": ids[1], "saved": True, "title": "Rome circuit"}
    listed = store.search(saved=True)
    assert listed["total"] == 1 and listed["items"][0]["title"] == "Rome circuit"
    assert store.search(q="rome circuit")["total"] == 1
    assert store.get(ids[1])["saved"] is True
    assert store.save(ids[1])["title"] == "Rome circuit"
    with pytest.raises(NotFound):
        store.save("f" * 64)
    with pytest.raises(BadRequest):
        store.save(ids[1], "x" * 201)


# ----- views --------------------------------------------------------------------------------
def test_views(store, make_circuit, make_request):
    circuit = make_circuit()
    rid = store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)["id"]
    state = {"threshold": 0.05, "node": "a1.h0", "step": 3, "labels": True, "hidden": ["m0", "m1"]}
    short = store.put_view(rid, state)
    assert short.isalnum() and len(short) == 12
    assert store.put_view(rid, dict(reversed(state.items()))) == short
    assert store.put_view(rid, {**state, "step": 4}) != short
    assert store.get_view(short) == {"result_id": rid, "state": state}
    assert store.get_view("nonexistent1") is None and store.get_view("../x") is None
    with pytest.raises(NotFound):
        store.put_view("e" * 64, state)
    with pytest.raises(BadRequest):
        store.put_view(rid, {"blob": "x" * 20_000})


# ----- jobs ---------------------------------------------------------------------------------
def test_jobs_are_recorded(store):
    job = {"id": "j1", "kind": "acdc", "params": {"tau": 0.01}, "status": "queued", "progress": 0.0,
           "message": "", "error": None, "result": None, "created_at": 100.0, "finished_at": None}
    store.record_job(job)
    assert store.get_job("j1")["status"] == "queued"
    store.record_job({**job, "status": "running", "progress": 0.1})
    store.record_job({**job, "status": "running", "progress": 0.2})  # throttled (same status, < 1 s)
    assert store.get_job("j1")["progress"] == 0.1
    store.record_job({**job, "status": "succeeded", "progress": 1.0, "finished_at": 105.0,
                      "result": {"id": "c" * 64, "kind": "circuit"}})
    got = store.get_job("j1")
    assert got == {"id": "j1", "kind": "acdc", "params": {"tau": 0.01}, "status": "succeeded", "progress": 1.0,
                   "message": "", "error": None, "result_id": "c" * 64, "created_at": 100.0, "finished_at": 105.0}
    store.record_job({"id": "j2", "kind": "sweep", "params": {}, "status": "failed", "progress": 0.5,
                      "message": "boom", "error": {"type": "internal_error", "message": "boom"},
                      "createdAt": 7.0, "finishedAt": 8.0})
    assert store.get_job("j2")["error"] == {"type": "internal_error", "message": "boom"}
    assert store.get_job("j2")["created_at"] == 7.0
    assert store.get_job("missing") is None and store.get_job("x" * 1000) is None


# ----- open_store ---------------------------------------------------------------------------
def test_open_store_sqlite_defaults(tmp_path):
    from kcircuits.config import Settings
    from kcircuits.store import open_store

    store = open_store(Settings(data_dir=tmp_path / "d", device="cpu"))
    assert (tmp_path / "d" / "kcircuits.sqlite").exists()
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    store.close()


@pytest.mark.postgres
def test_open_store_uses_database_url(monkeypatch, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from kcircuits.config import get_settings
    from kcircuits.store import open_store

    monkeypatch.setenv("KCIRCUITS_DATABASE_URL", db_url)
    get_settings.cache_clear()
    store = open_store(get_settings())
    assert store.engine.dialect.name == "postgresql"
    out = store.get_or_compute("lens", {"model": "tiny-gpt2", "prompt": "p"}, REV, lambda: {"x": 1.5})
    assert store.get(out["id"])["x"] == 1.5
    store.close()


def test_storage_failure_still_answers(store, make_circuit, make_request, monkeypatch):
    """When the database refuses a write, the computed result is returned (uncached, with its id)."""
    from sqlalchemy.exc import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("insert", {}, Exception("disk full"))

    circuit = make_circuit()
    monkeypatch.setattr(store, "put", broken)
    out = store.get_or_compute("circuit", make_request(circuit), REV, lambda: circuit)
    assert out["cached"] is False and strip(out) == circuit
    assert out["id"] == store.content_id("circuit", make_request(circuit), REV)
    assert store.get(out["id"]) is None
    monkeypatch.setattr(store, "_session", type(store._session)(bind=None))
    store.record_job({"id": "j", "kind": "acdc", "status": "queued"})  # logged, not raised
