"""The Train form's launch across hosts: the app starts processes only on its own host, so it writes
the msrun command of each host into a script (and the clipboard) for the user to run on each machine."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from textual.screen import Screen

from babyllama.errors import UserError
from babyllama.runs import host_commands, write_host_script
from babyllama_tui.screens.run_text import RunTextScreen

HOSTS_TEXT = re.compile(r"\s*(\d+)\s+(\S+)\s*")


def hosts_problem(text: str) -> str | None:
    """What is wrong with "HOSTS ADDRESS" (how many machines, the first one's address), or None."""
    found = HOSTS_TEXT.fullmatch(text)
    if not found:
        return "give the number of hosts and the first host's address, e.g. 2 10.0.0.1"
    if int(found.group(1)) < 2:
        return "a launch across hosts needs at least 2 hosts"
    address = found.group(2)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", address):
            return f"{address!r} is neither an IP address nor a host name"
    return None


def script_path(root: Path, run_name: str) -> Path:
    return root / "out" / "hosts" / f"{run_name}.sh"


def request_host_commands(screen: Screen, run: Path, args: list[str], workers_per_host: int) -> None:
    """Ask for the hosts, then write `out/hosts/NAME.sh` and copy it to the clipboard."""
    app = screen.app

    def chosen(text: str | None) -> None:
        if text is None:
            return
        hosts, address = HOSTS_TEXT.fullmatch(text).groups()
        path = script_path(app.root, run.name)
        try:
            commands = host_commands(run, args, hosts=int(hosts), workers_per_host=workers_per_host,
                                     master_addr=address)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_host_script(path, commands)
        except (UserError, OSError) as e:
            screen.notify(str(e), severity="error")
            return
        app.copy_to_clipboard(path.read_text(encoding="utf-8"))
        screen.notify(f"wrote {path} (and copied it): on host N run `sh {path} N`, host 0 first "
                      f"({address}); the run folder must be one every host sees", timeout=10)

    question = RunTextScreen(
        f"Launch {run.name} across hosts",
        f"Writes the msrun command of each host, {workers_per_host} worker(s) each (the form's workers), "
        "into a script to run on every machine: the app starts processes only on this one.",
        "hosts address",
        "2 ",
        "Write",
        hosts_problem,
    )
    app.push_screen(question, chosen)
