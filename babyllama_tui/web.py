"""`babyllama-tui --web`: the same app in a browser tab, served by textual-serve.

textual-serve runs a shell command per browser connection and pipes the app's screen to the page
over a websocket. The command here is this interpreter running `babyllama_tui` with the options
the server was given, so each tab is the terminal app with the same project folder. The server
listens on 127.0.0.1 unless told otherwise: it is reached through an SSH port forward, and
anyone who reaches it drives the app.
"""

from __future__ import annotations

import errno
import getpass
import ipaddress
import shlex
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from textual_serve.server import Server, to_int

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def app_command(root: Path, stall_after_minutes: float) -> str:
    """The shell command textual-serve runs for each browser tab: this interpreter, the same options.
    `exec`, so the app is the process textual-serve started and signals it sends reach the app."""
    argv = [sys.executable, "-m", "babyllama_tui", "--root", str(root), "--stall-after", repr(stall_after_minutes)]
    return "exec " + shlex.join(argv)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host in LOOPBACK_NAMES


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def forward_hint(host: str, port: int) -> str:
    """How to reach the server from the user's own computer."""
    if not is_loopback(host):
        return f"open http://{url_host(host)}:{port} from a machine that reaches this one"
    return (f"from your computer: ssh -L {port}:{url_host(host)}:{port} {getpass.getuser()}@{socket.gethostname()}, "
            f"then open http://localhost:{port}")


class AppServer(Server):
    """textual-serve's server, changed: the page's addresses follow the address the browser used (so a
    forward to another local port works); on loopback, a name that is not a loopback name is refused
    (another site's name pointed at 127.0.0.1), and so is a websocket from another site's page (any
    site the user visits could otherwise drive the app); its own lines on startup."""

    def __init__(self, command: str, host: str, port: int) -> None:
        super().__init__(command, host=host, port=port, title="babyllama")

    def host_allowed(self, request: web.Request) -> bool:
        """Whether the browser asked for a loopback name, when the server listens on loopback only.
        Another name there is another site's, pointed at 127.0.0.1 to reach the app from its pages."""
        return not is_loopback(self.host) or is_loopback(urlsplit(f"http://{request.host}").hostname or "")

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        if not self.host_allowed(request):
            raise web.HTTPForbidden(text=f"babyllama-tui: not served under the name {request.host}\n")
        base = f"http://{request.host}"
        return {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": f"ws://{request.host}{request.app.router['websocket'].url_for()}",
            "config": {"static": {"url": f"{base}/static/"}},
            "application": {"name": self.title},
        }

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if not self.host_allowed(request) or (origin is not None and urlsplit(origin).netloc != request.host):
            raise web.HTTPForbidden(text="babyllama-tui: a websocket from another site's page\n")
        return await super().handle_websocket(request)

    async def on_startup(self, app: web.Application) -> None:
        print(f"babyllama-tui: serving the app on http://{url_host(self.host)}:{self.port} "
              "(each browser tab runs its own app; Ctrl+C stops the server, runs go on)", flush=True)
        print(f"babyllama-tui: {forward_hint(self.host, self.port)}", flush=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or OSError."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As servers do: a port whose last connections are still closing can be had again at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def serve_app(command: str, host: str, port: int) -> int:
    """Serve the app until SIGINT or SIGTERM; a port that cannot be had is one line and status 2."""
    import asyncio
    import signal

    try:
        sock = bind(host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            reason = f"port {port} is in use on {host}; choose another with --port"
        else:
            why = error.strerror or str(error)
            reason = f"cannot listen on {host}:{port} ({why}); check --host and --port"
        print(f"babyllama-tui: error: {reason}", file=sys.stderr)
        return 2
    server = AppServer(command, host, sock.getsockname()[1])
    server.initialize_logging()
    loop = asyncio.new_event_loop()
    for received in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(received, server.request_exit)
    # textual-serve's own serve() binds by host and port, after its startup has run; its routes come from _make_app.
    web.run_app(server._make_app(), sock=sock, handle_signals=False, loop=loop, print=None, access_log=None)
    return 0
