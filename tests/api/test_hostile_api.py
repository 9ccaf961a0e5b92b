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
    assert headers.get("connection") != "close" and headers["x-content-type-options"] == "nosniff"
    assert after == 200


def _chunked_post(address, path: str, total: int, finish: bool, chunk: int = 65536) -> int:
    """POST ``total`` bytes chunked (no Content-Length); without ``finish`` the body never ends,
    so only a server that counts bytes as they come can answer. Returns the status."""
    import socket

    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        body = b'{"result_id": "' + b"a" * max(0, total - 20) + b'"}'
        try:
            for start in range(0, len(body), chunk):
                part = body[start:start + chunk]
                conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            if finish:
                conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read its answer
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.parametrize("total, finish, expected", [
    (3_000_000, False, 413),  # over the limit, never-ending: answered as soon as the limit is passed
    (1_000_100, True, 413),  # just over
    (200, True, 422),  # small chunked bodies are read as usual (result_id over 64 characters)
])
def test_chunked_bodies_are_bounded(live_server, total, finish, expected):
    _, address = live_server
    assert _chunked_post(address, "/api/views", total, finish) == expected


def test_declared_length_over_limit_is_413_before_reading(live_server):
    _, address = live_server
    raw = b"POST /api/views HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{"
    [(status, headers, body)] = raw_exchange(address, [raw])
    assert status == 413 and b"too_large" in body and "content-security-policy" in headers
