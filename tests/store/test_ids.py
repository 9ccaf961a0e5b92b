"""Content ids: deterministic (key order, process) and sensitive to every field that fixes the numbers."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from kcircuits.errors import BadRequest
from kcircuits.store import canonical_json, hash_key, key_from_provenance
from kcircuits.store import ids as ids_mod
from kcircuits.store.core import Store

BASE = {"model": "tiny-gpt2", "prompt": "The Eiffel Tower is in the city of", "target": " Paris",
        "method": "eap", "ablation": "patch", "metric": "logit_diff", "top_n": 200, "ig_steps": 5,
        "corrupt_prompt": None, "kv_mode": "grouped", "threshold": 0.015625}
REV = "sha256:" + "0" * 64

scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))


PURE_STORE = Store(create_engine("sqlite://"), dtype="float32", device="cpu")  # ids never touch the engine


@pytest.fixture
def store():
    return PURE_STORE


def test_canonical_json_is_sorted_compact_and_repr_floats():
    assert canonical_json({"b": 0.1, "a": [1, 2.5, None, True], "c": "\u00e9"}) == \
        '{"a":[1,2.5,null,true],"b":0.1,"c":"\u00e9"}'
    assert canonical_json({"x": 1 / 3}) == '{"x":%r}' % (1 / 3)
    with pytest.raises(BadRequest):
        canonical_json({"x": math.nan})
    with pytest.raises(BadRequest):
        canonical_json({"x": [math.inf]})


def test_id_is_sha256_of_the_documented_key(store):
    rid = store.content_id("circuit", BASE, REV)
    key = store.key("circuit", BASE, REV)
    assert set(key) == {"schema_version", "kind", "model", "revision", "libraries", "request", "dtype",
                        "device_class"}
    assert set(key["libraries"]) == {"torch", "transformers", "transformer_lens", "kcircuits"}
    expected = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                              .encode()).hexdigest()
    assert rid == expected and len(rid) == 64
    assert hash_key(key_from_provenance(store.provenance("circuit", BASE, REV))) == rid


def test_id_is_deterministic_across_key_order_and_processes(store):
    rid = store.content_id("circuit", BASE, REV)
    assert store.content_id("circuit", dict(reversed(list(BASE.items()))), REV) == rid
    code = ("import json,sys;from sqlalchemy import create_engine;from kcircuits.store.core import Store;"
            "print(Store(create_engine('sqlite://'),device='cpu').content_id('circuit',json.loads(sys.argv[1]),"
            "sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(BASE), REV], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin"})
    assert out.stdout.strip() == rid


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    yield prefix


@settings(max_examples=100, deadline=None)
@given(request=st.fixed_dictionaries({"model": st.text(min_size=1, max_size=10), "prompt": st.text(max_size=40)},
                                     optional={"method": st.sampled_from(["eap", "eap-ig", "exact"]),
                                               "params": st.dictionaries(st.text(max_size=5), scalars, max_size=4),
                                               "top_n": st.integers(1, 5000), "threshold": st.floats(0, 1)}),
       data=st.data())
def test_changing_any_request_field_changes_the_id(request, data):
    store = PURE_STORE
    rid = store.content_id("circuit", request, REV)
    leaves = [p for p in _paths(request) if p]
    path = data.draw(st.sampled_from(leaves))
    changed = copy.deepcopy(request)
    parent = changed
    for part in path[:-1]:
        parent = parent[part]
    old = parent[path[-1]]
    new = data.draw(scalars.filter(lambda v: json.dumps(v) != json.dumps(old)) if path[0] != "model"
                    else st.text(min_size=1, max_size=10).filter(lambda v: v != old))
    parent[path[-1]] = new
    assert store.content_id("circuit", changed, REV) != rid
    # adding or removing a key changes it too
    extra = dict(request, extra_knob=1)
    assert store.content_id("circuit", extra, REV) != rid


def test_environment_fields_change_the_id(store, monkeypatch):
    rid = store.content_id("circuit", BASE, REV)
    assert store.content_id("lens", BASE, REV) != rid
    assert store.content_id("circuit", BASE, REV + "1") != rid
    assert store.content_id("circuit", {**BASE, "dtype": "bfloat16"}, REV) != rid
    assert Store(store.engine, dtype="float16", device="cpu").content_id("circuit", BASE, REV) != rid
    assert Store(store.engine, device="cuda:1").content_id("circuit", BASE, REV) != rid
    assert Store(store.engine, device="cuda:0").content_id("circuit", BASE, REV) == \
        Store(store.engine, device="cuda").content_id("circuit", BASE, REV)
    for lib in ("torch", "transformers", "transformer_lens", "kcircuits"):
        real = ids_mod.library_versions()
        monkeypatch.setattr(ids_mod, "library_versions", lambda real=real, lib=lib: {**real, lib: "9.9.9"})
        assert store.content_id("circuit", BASE, REV) != rid, lib
        monkeypatch.undo()
    monkeypatch.setattr(ids_mod, "SCHEMA_VERSION", 2)
    assert store.content_id("circuit", BASE, REV) != rid


def test_int_and_float_and_prompt_whitespace_are_distinct(store):
    rid = store.content_id("circuit", BASE, REV)
    assert store.content_id("circuit", {**BASE, "top_n": 200.0}, REV) != rid
    assert store.content_id("circuit", {**BASE, "prompt": BASE["prompt"] + " "}, REV) != rid
    assert store.content_id("circuit", {**BASE, "threshold": 0.015625000000000003}, REV) != rid


def test_bad_requests(store):
    with pytest.raises(BadRequest):
        store.content_id("circuit", {"prompt": "no model"}, REV)
    with pytest.raises(BadRequest):
        store.content_id("circuit", {**BASE, "threshold": math.nan}, REV)
    with pytest.raises(BadRequest):
        key_from_provenance({"model": "x"})
