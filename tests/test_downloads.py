"""Downloads of TLC months over a real loopback HTTP server: every way a download can go
wrong (a chunked body cut short, a dropped connection, a stall, an HTTP error, an error page
or a wrong file served as the month) is a one-line ``DataError`` naming the file and the URL,
with nothing left in the folder; a good download keeps the user's normal permissions."""

from __future__ import annotations

import http.server
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steps import tlc
from steps.errors import DataError
from tests.conftest import (
    start_loopback_server,
    stop_loopback_servers,
    tlc_file,
    write_yellow_copy,
)

MONTH = "2023-01"
NAME = tlc.file_name("green", MONTH)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body: bytes = b""

    def log_message(self, *args):  # keep pytest output clean
        pass


class ChunkedCutShort(_Handler):
    """Chunked transfer encoding (no Content-Length to compare with), closed mid-body."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(self.body) // 2, 1 << 16):
            chunk = self.body[start : start + (1 << 16)]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.flush()
        self.close_connection = True  # no terminating zero-length chunk


class HangsUp(_Handler):
    """Reads the request and closes without a status line."""

    def do_GET(self):
        self.close_connection = True


class Stalls(_Handler):
    """Sends the headers and a little of the body, then nothing for longer than the timeout."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[:1000])
        self.wfile.flush()
        time.sleep(3)
        self.close_connection = True


class ServerError(_Handler):
    def do_GET(self):
        self.send_error(503, "Slow Down")


class ErrorPage(_Handler):
    """An HTML page with status 200, as a portal or a misconfigured mirror serves."""

    def do_GET(self):
        page = b"<html><body><h1>Service unavailable</h1></body></html>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


class ServesBody(_Handler):
    """Serves ``body`` whole, whatever the path."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def serve():
    """Start a loopback server with a handler class serving ``body``; returns its base URL."""
    servers = []

    def start(handler: type[_Handler], body: bytes = b"") -> str:
        return start_loopback_server(type(handler.__name__, (handler,), {"body": body}), servers)

    yield start
    stop_loopback_servers(servers)


def assert_clean_failure(raw: Path, base: str, match: str, timeout: float = 60.0) -> str:
    url = f"{base}/{NAME}"
    with pytest.raises(DataError) as err:
        tlc.download(url, raw / NAME, "green", timeout=timeout)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download {NAME} from {url}: "), message
    assert match in message, message
    assert list(raw.iterdir()) == []  # neither the month nor a part file
    return message


@pytest.fixture(scope="module")
def month_bytes() -> bytes:
    return tlc_file(MONTH).read_bytes()


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (ChunkedCutShort, "cut short: IncompleteRead("),
        (HangsUp, "Remote end closed connection without response"),
        (ServerError, "HTTP 503 Slow Down"),
        (ErrorPage, "not a parquet file"),
    ],
)
def test_failed_download_is_one_line_and_leaves_nothing(
    tmp_path, serve, month_bytes, handler, match
):
    assert_clean_failure(tmp_path, serve(handler, month_bytes), match)


def test_stalled_download_times_out_as_one_line(tmp_path, serve, month_bytes):
    assert_clean_failure(tmp_path, serve(Stalls, month_bytes), "timed out", timeout=0.5)


def test_a_parquet_file_without_the_colours_columns_is_not_kept(tmp_path, serve):
    (tmp_path / "src").mkdir()
    yellow = write_yellow_copy(MONTH, tmp_path / "src").read_bytes()  # tpep_*, not lpep_*
    raw = tmp_path / "raw"
    raw.mkdir()
    assert_clean_failure(raw, serve(ServesBody, yellow), "no column 'lpep_pickup_datetime'")


def test_a_parquet_file_without_rows_is_not_kept(tmp_path, serve):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(tlc_file(MONTH)).slice(0, 0), empty)
    raw = tmp_path / "raw"
    raw.mkdir()
    assert_clean_failure(raw, serve(ServesBody, empty.read_bytes()), "no rows")


def test_a_truncated_parquet_file_served_whole_is_not_kept(tmp_path, serve, month_bytes):
    """Complete by HTTP's account (the length matches) but not a parquet file: no footer."""
    assert_clean_failure(tmp_path, serve(ServesBody, month_bytes[:-100]), "not a parquet file")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_downloaded_month_has_the_users_normal_permissions(
    tmp_path, serve, month_bytes, umask, mode
):
    base = serve(ServesBody, month_bytes)
    old = os.umask(umask)
    try:
        tlc.download(f"{base}/{NAME}", tmp_path / NAME, "green")
    finally:
        os.umask(old)
    assert (tmp_path / NAME).stat().st_mode & 0o777 == mode
    assert (tmp_path / NAME).read_bytes() == month_bytes
    assert [p.name for p in tmp_path.iterdir()] == [NAME]
