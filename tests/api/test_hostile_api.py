"""Hostile input, as an outside campaign sent it (issue 15): every case is a clear 4xx, never a
500, and a failure never costs the client its keep-alive connection."""

from __future__ import annotations

import pytest

from .live import raw_exchange


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


@pytest.mark.parametrize("query, needle", [
    ("offset=9223372036854775808", "offset"),
    ("offset=99999999999999999999999999", "offset"),
    ("offset=-1", "offset"),
    ("limit=9223372036854775808", "limit"),
    ("limit=0", "limit"),
    ("limit=1e3", "limit"),
])
def test_results_paging_out_of_range_is_422(live_server, query, needle):
    _, address = live_server
    (status, _, body), (after, _, _) = raw_exchange(address, [_get(f"/api/results?{query}"), _get("/healthz")])
    assert status == 422 and needle in body.decode(), body
    assert after == 200


def test_largest_documented_offset_is_served(live_server):
    app, address = live_server
    spec = app.openapi()["paths"]["/api/results"]["get"]["parameters"]
    maximum = next(p for p in spec if p["name"] == "offset")["schema"]["maximum"]
    [(status, _, body)] = raw_exchange(address, [_get(f"/api/results?offset={maximum}")])
    assert status == 200 and b'"items":[]' in body


def test_a_500_keeps_the_connection_alive(live_server, monkeypatch):
    app, address = live_server

    def broken(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.store, "search", broken)
    (status, headers, body), (after, _, _) = raw_exchange(address, [_get("/api/results"), _get("/healthz")])
    assert status == 500 and b"internal_error" in body and b"boom" not in body
    assert headers.get("connection") != "close"
    assert after == 200
