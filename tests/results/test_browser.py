"""The leaderboard page in a real headless browser (Debian's chromium, installed by scripts/setup.sh):
it loads from file:// with no console errors, a click on a column header reorders the rows, the
filter box hides rows that do not match, the provenance row opens, and a screenshot is written.

Chromium runs headless with a fresh user-data dir and its network features off, driven through the
DevTools protocol over a small standard-library websocket client (no extra package). Without
chromium the tests are skipped, saying so.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from evalbench.results import leaderboard
from tests.results.test_leaderboard import fixture_records

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1400,1000"]
TIMEOUT_S = 30.0


def _chromium() -> str:
    path = os.environ.get("EVALBENCH_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not path:
        pytest.skip("chromium not found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH and $EVALBENCH_CHROMIUM); "
                    "scripts/setup.sh installs it: apt-get install chromium")
    return path


class DevTools:
    """A minimal client of the Chrome DevTools protocol over one websocket (RFC 6455: masked text frames
    out, unmasked frames in); ``events`` keeps every event received."""

    def __init__(self, ws_url: str) -> None:
        assert ws_url.startswith("ws://")
        hostport, _, path = ws_url[len("ws://"):].partition("/")
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools websocket closed")
            buf += chunk
        return buf

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                         if n < 1 << 16 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _message(self) -> dict:
        data = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            n = struct.unpack(">H", self._read(2))[0] if n == 126 else struct.unpack(">Q", self._read(8))[0] if n == 127 else n
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self._send(payload, opcode=0xA)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools websocket closed by the browser")
            data += payload
            if b0 & 0x80:  # FIN
                return json.loads(data)

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, *, since: int = 0) -> dict:
        """The first ``event`` received at or after index ``since`` of ``events`` (waiting for it)."""
        deadline = time.monotonic() + TIMEOUT_S
        seen = since
        while time.monotonic() < deadline:
            for e in self.events[seen:]:
                if e.get("method") == event:
                    return e
            seen = len(self.events)
            self.events.append(self._message())
        raise TimeoutError(event)

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                      " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def errors(self) -> list[str]:
        """Console errors, log errors and uncaught exceptions seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + json.dumps(p.get("args"))[:500])
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", ""))
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def browser(tmp_path):
    """A fresh headless chromium; yields a function that opens a file:// page and returns its DevTools."""
    exe = _chromium()
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients: list[DevTools] = []
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium ({exe}) did not start its DevTools endpoint (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])

        def open_page(page: Path) -> DevTools:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT_S) as resp:
                target = next(t for t in json.load(resp) if t["type"] == "page")
            dt = DevTools(target["webSocketDebuggerUrl"])
            clients.append(dt)
            for domain in ("Page", "Runtime", "Log"):
                dt.call(f"{domain}.enable")
            mark = len(dt.events)  # the load event may arrive before navigate's own reply
            dt.call("Page.navigate", url=page.resolve().as_uri())
            dt.wait_for("Page.loadEventFired", since=mark)
            return dt

        yield open_page
    finally:
        for dt in clients:
            dt.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _order(dt: DevTools, table: int = 0) -> list[str]:
    return dt.js(f"Array.from(document.querySelectorAll('table.lb')[{table}].tBodies)"
                 ".map(b => b.rows[0].cells[0].getAttribute('data-v'))")


def _visible(dt: DevTools, table: int = 0) -> list[str]:
    return dt.js(f"Array.from(document.querySelectorAll('table.lb')[{table}].tBodies)"
                 ".filter(b => b.rows[0].getClientRects().length > 0).map(b => b.rows[0].cells[0].getAttribute('data-v'))")


def _values(dt: DevTools, col: int) -> list[Optional[float]]:
    vals = dt.js(f"Array.from(document.querySelectorAll('table.lb')[0].tBodies)"
                 f".map(b => b.rows[0].cells[{col}].getAttribute('data-v'))")
    return [float(v) if v else None for v in vals]


@pytest.fixture
def page(tmp_path) -> Path:
    out = tmp_path / "lb"
    leaderboard.write(out, leaderboard.build(fixture_records(), plots=True))
    return out / leaderboard.HTML


def test_browser__page_loads_sorts_filters_and_screenshots(browser, page, tmp_path):
    dt = browser(page)
    assert dt.js("document.title") == leaderboard.TITLE
    before = _order(dt)
    assert len(before) == 4 and before == ["base", "sup", "a", "b"]  # baselines first, then by name

    # the first accuracy column: a click sorts it descending, a second click ascending
    col = dt.js("document.querySelector('table.lb th.sortable[data-type=num]').getAttribute('data-col')")
    selector = f"table.lb th.sortable[data-col='{col}']"
    dt.click(selector)
    desc = _values(dt, int(col))
    assert _order(dt) != before and desc == sorted(desc, key=lambda v: (v is None, -(v or 0)))
    assert dt.js(f"document.querySelector(\"{selector}\").getAttribute('aria-sort')") == "descending"
    dt.click(selector)
    asc = _values(dt, int(col))
    assert asc == sorted(asc, key=lambda v: (v is None, v or 0))
    # the checkpoint column sorts by name
    dt.click("table.lb th.sortable[data-col='0']")
    assert _order(dt) == sorted(before)

    # the filter box hides rows that do not match (typed, as a user would)
    dt.js("document.getElementById('filter').focus()")
    dt.call("Input.insertText", text="baseline")
    assert sorted(_visible(dt)) == ["base", "sup"] and _visible(dt, 1) == ["base"]  # every table is filtered
    assert dt.js("document.getElementById('count').textContent") == "3 of 6 rows"
    dt.js("const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'))")
    assert sorted(_visible(dt)) == ["a", "b", "base", "sup"]

    # provenance: the hover title of a cell, and the row's details opening on a click
    title = dt.js("document.querySelector('table.lb tbody.entry td[title]').getAttribute('title')")
    assert "seed" in title and "code: evalbench" in title and "created:" in title
    assert dt.js("document.querySelector('table.lb tr.prov').getClientRects().length") == 0
    dt.click("table.lb tbody.entry td.name button")
    assert dt.js("Array.from(document.querySelectorAll('table.lb tr.prov')).some(r => r.getClientRects().length > 0)")

    # the plots are shown (their files load from beside the page)
    widths = dt.js("Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
    assert widths and all(w > 0 for w in widths), widths

    shot = base64.b64decode(dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"])
    path = Path(os.environ.get("EVALBENCH_SCREENSHOT_DIR", tmp_path)) / "leaderboard-screenshot.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    assert dt.errors() == []


def test_browser__the_error_check_sees_a_broken_page(browser, tmp_path):
    """The console-error check is not vacuous: a page that throws and logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>x</title></head><body>"
                   "<script>console.error('logged error'); null.boom();</script></body></html>")
    dt = browser(bad)
    dt.js("1")  # let the events arrive
    errors = dt.errors()
    assert any("logged error" in e for e in errors) and any(e.startswith("exception") for e in errors), errors
