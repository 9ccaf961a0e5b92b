"""A real uvicorn on loopback for tests that need real connections (keep-alive, chunked bodies)."""

from __future__ import annotations


def serve_live(app):
    """Run ``app`` in a uvicorn thread on a free loopback port; yields ``(app, address)``."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield app, sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def raw_exchange(address, requests: list[bytes], timeout: float = 5.0) -> list[tuple[int, dict, bytes]]:
    """Send each raw HTTP/1.1 request on ONE connection, reading each response before the next.

    Returns ``(status, headers, body)`` per request; raises ConnectionError when the server
    closed the connection before answering one.
    """
    import socket

    results = []
    with socket.create_connection(address, timeout=timeout) as conn:
        reader = conn.makefile("rb")
        for raw in requests:
            conn.sendall(raw)
            status_line = reader.readline()
            if not status_line:
                raise ConnectionError("server closed the connection")
            status = int(status_line.split()[1])
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = reader.read(int(headers.get("content-length", "0")))
            results.append((status, headers, body))
    return results
