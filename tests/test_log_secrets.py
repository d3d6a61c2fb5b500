"""No query text or credential in any log line at INFO or above: malformed requests carrying
them are sent to a real ``typeahead serve`` process, and its log is read."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson

from tests.lexical_fixtures import build_small_index
from tests.redis_server import free_port
from tests.test_server import wait_ready

QUERY = "wellhiddenquery"
TOKEN = "s3cr3t-bearer-t0ken"
MALFORMED = [
    f"GET /v1/suggest?q={QUERY}é HTTP/1.1\r\nHost: t\r\n\r\n".encode(),  # raw UTF-8
    f"GET /v1/suggest?q={QUERY} HTTP/1.2\r\nHost: t\r\n\r\n".encode(),
    f"GET /v1/suggest?q={QUERY}\x01 HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /v1/suggest?q={QUERY} HTTP/1.1\r\nHost: t\nX: y\r\n\r\n".encode(),
    f"GET /v1/suggest?q=a HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\x00\r\n\r\n"
    .encode(),
    f"POST /admin/reload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
    f"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}".encode(),
    f"GET /v1/suggest?q={QUERY} HTTP/2.0\r\nHost: t\r\n\r\n".encode(),
    f"G\x00T /v1/suggest?q={QUERY} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /v1/suggest?q={QUERY} HTTP/1.1\r\nHost: t\r\nX-Long: {'a' * 9000}\r\n\r\n".encode(),
    f"GET /v1/suggest?q={QUERY}&k=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(),  # a parameter error (app-level 400)
]


def send(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)  # (every one of them ends with the connection closed)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_requests_leave_no_query_or_token_in_the_log(tmp_path: Path) -> None:
    index = build_small_index(tmp_path)
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "TYPEAHEAD_GENERATION": "false", "TYPEAHEAD_LOG_LEVEL": "INFO",
           "TYPEAHEAD_SUGGEST_LOG_SAMPLE": "1"}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "typeahead", "serve", "--index", str(index.path),
             "--port", str(port), "--workers", "1"],
            env=env, stdout=log_file, stderr=log_file)
        try:
            wait_ready(f"http://127.0.0.1:{port}")
            answers = [send(port, payload) for payload in MALFORMED]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    assert [a[9:10] for a in answers] == [b"4"] * 5 + [b"4", b"5", b"4", b"4", b"4"], answers
    entries = [orjson.loads(line) for line in log_path.read_bytes().splitlines()
               if line.startswith(b"{")]
    assert any(e["msg"] == "malformed request refused" for e in entries)
    text = log_path.read_text("utf-8", "replace")
    assert QUERY not in text and TOKEN not in text
