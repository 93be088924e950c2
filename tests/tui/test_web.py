"""`babyllama-tui --web`: the real server (textual-serve) in a child process, its page and websocket
over HTTP, a run launched from a browser tab outliving the tab and the server, and the app's first
screen in a real headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from babyllama_tui.web import app_command

URL = re.compile(r"serving the app on (http://\S+)")
ESCAPE = re.compile(r"\x1b(\[[0-9;?$]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>])")
CHROMIUM = shutil.which("chromium")


class WebServer:
    """`python -m babyllama_tui --web` on a free port, in its own session as in a terminal of its own."""

    def __init__(self, root: Path, *extra: str):
        self.root = root
        self.process = subprocess.Popen(
            [sys.executable, "-m", "babyllama_tui", "--web", "--root", str(root), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        first, self.hint = self.read_lines(2, 30)
        match = URL.search(first)
        assert match, f"no URL in the server's first line: {first!r}"
        self.url = match.group(1)

    def read_lines(self, count: int, limit: float) -> list[str]:
        """The first `count` lines the server prints, read from its pipe as they come."""
        out = b""
        deadline = time.monotonic() + limit
        while out.count(b"\n") < count:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            assert chunk, f"the server printed only {out!r} (exit status {self.process.poll()})"
            out += chunk
        return out.decode().splitlines()[:count]

    def apps(self) -> list[psutil.Process]:
        """The app processes the server runs, one per connected tab."""
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def interrupt(self) -> int:
        """Ctrl+C in its terminal: SIGINT to its whole process group, apps included."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(30)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def begun(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "out" / "runs").mkdir(parents=True)
    return root


@pytest.fixture
def server(begun):
    web = WebServer(begun)
    yield web
    web.close()


def screen_text(data: bytes) -> str:
    return ESCAPE.sub("", data.decode("utf-8", "replace"))


async def read_until(ws: aiohttp.ClientWebSocketResponse, seen: bytearray, found, what: str, limit: float = 60):
    """Read the app's output from the websocket until `found(text so far)`; fail with the text otherwise."""
    deadline = time.monotonic() + limit
    while not found(screen_text(seen)):
        left = deadline - time.monotonic()
        assert left > 0, f"waited {limit} s for {what}; the app wrote:\n{screen_text(seen)[-3000:]}"
        try:
            message = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            continue
        assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), f"the websocket ended: {message}"
        if message.type == aiohttp.WSMsgType.BINARY:
            seen += message.data


def the_first_screen(text: str) -> bool:
    return all(word in text for word in ("babyllama", "1 Corpora", "2 Train", "3 Monitor", "Quit"))


async def wait_for(condition, what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.1)


def test_the_command_is_this_interpreter_with_the_options_given(tmp_path):
    folder = tmp_path / "a project with spaces"
    assert app_command(folder, 2.5) == (
        f"exec {sys.executable} -m babyllama_tui --root '{folder}' --stall-after 2.5"
    )


async def test_the_page_and_the_websocket_serve_the_app_and_a_closed_tab_ends_its_app(server, begun):
    assert server.url.startswith("http://127.0.0.1:")
    port = server.url.rsplit(":", 1)[1]
    assert f"ssh -L {port}:127.0.0.1:{port} " in server.hint

    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/") as page:
            assert page.status == 200
            html = await page.text()
        # The page's addresses are the ones the browser used, so a forward to another local port works too.
        assert f'data-session-websocket-url="ws://127.0.0.1:{port}/ws"' in html
        async with session.get(server.url + "/", headers={"Host": f"localhost:{port}"}) as page:
            assert 'data-session-websocket-url="ws://localhost:' in await page.text()
        # Another site's name pointed at 127.0.0.1, and a websocket from another site's page, are refused.
        async with session.get(server.url + "/", headers={"Host": f"example.com:{port}"}) as page:
            assert page.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(server.url + "/ws", headers={"Origin": "http://example.com"})
        assert refused.value.status == 403
        assert server.apps() == []

        async with session.ws_connect(server.url + "/ws?width=100&height=30",
                                      headers={"Origin": server.url}) as ws:
            seen = bytearray()
            await read_until(ws, seen, the_first_screen, "the app's first screen")
            (app,) = server.apps()
            # The same interpreter and the same project folder as the server's.
            assert app.cmdline()[:5] == [sys.executable, "-m", "babyllama_tui", "--root", str(begun)]
            # It takes keys: 1 shows the Corpora screen.
            await ws.send_json(["stdin", "1"])
            await read_until(ws, seen, lambda text: "Corpora in data/" in text, "the Corpora screen")
        await wait_for(lambda: not app.is_running(), "the app of the closed tab to end")

    assert server.interrupt() == 0
    assert b"Traceback" not in server.process.stderr.read()


def test_a_port_in_use_is_one_line_and_a_failure(begun):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "babyllama_tui", "--web", "--root", str(begun), "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr == f"babyllama-tui: error: port {port} is in use on 127.0.0.1; choose another with --port\n"
    assert done.stdout == ""


def test_host_and_port_go_with_web(begun):
    done = subprocess.run([sys.executable, "-m", "babyllama_tui", "--port", "8000"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "babyllama-tui: error: --host and --port go with --web"


@pytest.fixture
def project(tmp_path, sample_jsonl, sp_tokenizer_dir) -> Path:
    """A project folder with one token file in data/, as `babyllama prepare` writes it."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "babyllama", "prepare", str(sample_jsonl), "--tokenizer", str(sp_tokenizer_dir),
         "--out", str(root / "data" / "sanguo.bin")],
        check=True, capture_output=True,
    )
    return root


def trainer_of(root: Path) -> psutil.Process | None:
    for status in (root / "out" / "runs").glob("*/status.json"):
        pid = json.loads(status.read_text(encoding="utf-8")).get("pid")
        if pid and psutil.pid_exists(pid):
            return psutil.Process(pid)
    return None


@pytest.mark.slow
async def test_a_run_launched_in_a_browser_tab_outlives_the_tab_and_the_server(project):
    web = WebServer(project)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(web.url + "/ws?width=100&height=30") as ws:
                seen = bytearray()
                await read_until(ws, seen, the_first_screen, "the app's first screen")
                await ws.send_json(["stdin", "n"])
                await read_until(ws, seen, lambda text: "tokens/step" in text, "the new-run form's summary")
                await ws.send_json(["stdin", "\x0c"])  # ctrl+l: launch
                await wait_for(lambda: trainer_of(project) is not None, "the launched run's trainer", 60)
        trainer = trainer_of(project)
        assert web.interrupt() == 0
        time.sleep(1)
        assert trainer.is_running() and trainer.status() != psutil.STATUS_ZOMBIE, "the run died with the server"
    finally:
        web.close()
        if (trainer := trainer_of(project)) is not None:
            trainer.kill()


class DevTools:
    """A page of a headless Chromium, driven through the DevTools protocol over its websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=60)
            if message.get("id") == self.next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    async def evaluate(self, expression: str):
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")


# Before the page's own script: keep the text of what the app sends, as the page's terminal draws it on a canvas.
RECORD_APP_OUTPUT = """
(() => {
  const Native = window.WebSocket;
  window.appOutput = "";
  window.WebSocket = function (url, protocols) {
    const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    const decoder = new TextDecoder();
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") window.appOutput += decoder.decode(event.data, {stream: true});
    });
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
})();
"""


@pytest.fixture
def chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         # Nothing but this machine: no name resolves (the page's web font included), no background traffic.
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1", "--no-proxy-server",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1200,800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (active.is_file() and active.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.2)
    yield int(active.read_text().split()[0])
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
async def test_the_first_screen_appears_in_a_real_browser(server, chromium, tmp_path):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{chromium}/json/list") as listing:
            (page,) = [target for target in await listing.json() if target["type"] == "page"]
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            browser = DevTools(ws)
            await browser.call("Page.enable")
            await browser.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_APP_OUTPUT)
            await browser.call("Page.navigate", url=server.url + "/")
            drawn = ("document.body.classList.contains('-first-byte') && "
                     "document.querySelector('.xterm-screen canvas') !== null && window.appOutput")
            deadline = time.monotonic() + 60
            while not the_first_screen(text := screen_text((await browser.evaluate(drawn) or "").encode())):
                assert time.monotonic() < deadline, f"the page did not show the app; it received:\n{text[-2000:]}"
                await asyncio.sleep(0.5)
            # A key typed in the page (its terminal focused, as a click does) reaches the app.
            await browser.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
            await browser.call("Input.dispatchKeyEvent", type="keyDown", key="1", text="1", code="Digit1")
            await browser.call("Input.dispatchKeyEvent", type="keyUp", key="1", code="Digit1")
            while "Corpora in data/" not in screen_text((await browser.evaluate("window.appOutput")).encode()):
                assert time.monotonic() < deadline + 30, "the Corpora screen did not follow the key 1"
                await asyncio.sleep(0.5)
            await asyncio.sleep(1)  # the terminal draws on its next animation frame
            shot = await browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "browser.png").write_bytes(base64.b64decode(shot["data"]))
    assert len(server.apps()) == 1
