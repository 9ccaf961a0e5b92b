"""Property test: arbitrary JSON bodies on every POST endpoint get a 2xx/4xx, never a 5xx."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELDS = ["model", "prompt", "target", "subject", "top_k", "ln_mode", "kl", "session", "node", "k",
          "position", "method", "ablation", "metric", "top_n", "threshold", "corrupt_prompt", "kind",
          "params", "tau", "ig_steps", "kv_mode", "result_id", "state", "layer"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["tiny-gpt2", "a0.h1", "m1", "eap", "zero", " Paris",
                                                           "The capital of France is", "\x00", "<script>"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=6)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6) | st.lists(scalars, max_size=2) | scalars


def _post_paths(client) -> list[str]:
    spec = client.get("/openapi.json").json()
    return sorted(path for path, ops in spec["paths"].items() if "post" in ops and "{" not in path)


def test_post_endpoints_never_500(client):
    paths = _post_paths(client)
    assert {"/api/lens", "/api/jobs", "/api/nodes/detail"} <= set(paths)
    for path in paths:
        _fuzz(client, path)


def _fuzz(client, path: str) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies)
    def check(body):
        # json.dumps writes NaN/Infinity, which strict JSON parsers must refuse with a 4xx
        res = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert res.status_code < 500 or res.status_code == 503, (path, body, res.status_code, res.text[:300])
        if res.status_code >= 400:
            assert set(res.json()) == {"error"}, res.text[:300]

    check()


def test_openapi_documents_error_codes(client):
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/") and method in {"get", "post", "delete"}:
                assert {"404", "422"} <= set(op["responses"]), (method, path)
