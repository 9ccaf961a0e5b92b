"""The persistence suite runs on SQLite and on the local PostgreSQL server (own schema per test)."""

from __future__ import annotations

import functools
import os
import uuid

import pytest
from sqlalchemy import create_engine, text

PG_URL = os.environ.get("KCIRCUITS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@functools.cache
def pg_unavailable() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means: no server for this run
        return f"no PostgreSQL server at {PG_URL} ({type(exc).__name__}); set KCIRCUITS_TEST_PG_URL"
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A database URL on an empty database: a fresh SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kcircuits.sqlite'}"
        return
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"kc_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(db_url):
    from kcircuits.store import Store, make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine)
    store = Store(engine, dtype="float32", device="cpu")
    yield store
    store.close()


def sample_circuit(prompt: str = "The Eiffel Tower is in the city of", n_layers: int = 2,
                   n_heads: int = 2) -> dict:
    """A small circuit result in the wire format, with two edges between one pair (slots q and k)."""
    nodes = [{"id": "input", "kind": "input", "layer": None, "head": None, "role": None, "score": 0.0,
              "in_circuit": True}]
    for layer in range(n_layers):
        for head in range(n_heads):
            nodes.append({"id": f"a{layer}.h{head}", "kind": "head", "layer": layer, "head": head,
                          "role": "mover" if head == 0 else None, "score": 0.1 * (head + 1) / (layer + 1),
                          "in_circuit": head == 0})
        nodes.append({"id": f"m{layer}", "kind": "mlp", "layer": layer, "head": None, "role": None,
                      "score": -0.25 * layer, "in_circuit": True})
    nodes.append({"id": "logits", "kind": "logits", "layer": None, "head": None, "role": None, "score": 1.0,
                  "in_circuit": True})
    edges = [
        {"source": "input", "target": "a1.h0", "slot": "q", "receiver": "a1.h0<q>", "score": 0.5, "in_circuit": True},
        {"source": "input", "target": "a1.h0", "slot": "k", "receiver": "a1.h0<k>", "score": -0.125,
         "in_circuit": False},
        {"source": "a0.h0", "target": "m1", "slot": "mlp_in", "receiver": "m1", "score": 1 / 3, "in_circuit": True},
        {"source": "m0", "target": "logits", "slot": "logits", "receiver": "logits", "score": 2.5e-7,
         "in_circuit": True},
        {"source": 'a0.h1', "target": "a1.h0", "slot": "v", "receiver": "a1.h0<v>", "score": 0.0,
         "in_circuit": False},
    ]
    return {
        "schema_version": 1, "kind": "circuit", "model": "tiny-gpt2", "revision": "random:seed0",
        "prompt": prompt, "target": " Paris", "target_id": 6342, "tokens": ["The", " E", "iff", "el"],
        "subject": {"text": "Eiffel Tower", "positions": [1, 2, 3]}, "method": "eap", "ablation": "patch",
        "metric": "logit_diff", "corrupt_prompt": None, "params": {"top_n": 3, "ig_steps": None},
        "graph": {"n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_heads, "kv_mode": "ungrouped",
                  "total_nodes": len(nodes), "total_edges": 99, "input_convention": "embed"},
        "nodes": nodes, "edges": edges,
        "metrics": {"edges": 3, "nodes": 5, "faithfulness": 0.8125, "hit_at_10": {"full": 1, "circuit": 1,
                                                                               "random": 0.1}},
        "heads": {"a0.h0": {"role": "mover", "top_tokens": [" Paris", "<b>"]}},
        "timings": {"attribution_s": 0.01, "evaluation_s": 0.02, "total_s": 0.03},
    }


def request_for(result: dict) -> dict:
    """The request dict a route would pass to get_or_compute for ``result``."""
    return {"model": result["model"], "prompt": result["prompt"], "target": result["target"],
            "method": result["method"], "ablation": result["ablation"], "metric": result["metric"],
            "top_n": 3}


@pytest.fixture
def make_circuit():
    """Factory for sample circuits: ``make_circuit(prompt=..., n_layers=..., n_heads=...)``."""
    return sample_circuit


@pytest.fixture
def make_request():
    return request_for
