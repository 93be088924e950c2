"""Playground screen: continue prompts, or chat, with any saved checkpoint, or with two side by side.

Each loaded checkpoint is a `babyllama serve --stdio` child (`ServeClient`) whose pieces stream
into a ContinuationPanel, or in chat mode (ctrl+t) into a ConversationPanel, each panel answering
the shared user turns with its own earlier answers (`playground.conversation`). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from babyllama_tui.playground.backends import BackendChoice, available_backends, served_label
from babyllama_tui.playground.conversation import Answer, Conversation, why_no_chat
from babyllama_tui.playground.serve_client import SERVE_PROGRAM, ServeClient, ServeError
from babyllama_tui.playground.session import ChatRecord, PanelRecord, save_session, session_markdown
from babyllama_tui.screens.app_screen import AppScreen
from babyllama_tui.screens.commands import PlaygroundCommands, ScreenKeysProvider
from babyllama_tui.textual_fixes import KeyFooter
from babyllama_tui.widgets.checkpoint_picker import (
    CheckpointChoice,
    CheckpointPicker,
    PickedCheckpoint,
    list_checkpoints,
    moved_choice,
)
from babyllama_tui.widgets.continuation_panel import ContinuationPanel
from babyllama_tui.widgets.conversation_panel import ConversationPanel
from babyllama_tui.widgets.mode_header import ModeHeader
from babyllama_tui.widgets.prompt_input import PromptInput
from babyllama_tui.widgets.sampling_form import SamplingForm

SLOTS = ("A", "B")
STATUS_S = 0.5
NO_CHECKPOINT_HINT = (
    "No checkpoint is loaded. ctrl+o picks one: any saved step of a run, or an exported folder by its path."
)
READY_HINT = "Type a prompt and press enter, or F1, F2, F3 for the seed's prompts."
CHAT_HINT = ("Type a message and press enter; the system prompt, if any, goes first. "
             "ctrl+r starts a new chat, ctrl+t goes back to continuing text.")
PROMPT_PLACEHOLDER = "text for the model to continue, then enter"
MESSAGE_PLACEHOLDER = "your message, then enter"


@dataclass
class Engine:
    """One loaded checkpoint: its server and what it is doing."""

    slot: str
    choice: CheckpointChoice
    client: ServeClient
    backend: BackendChoice  # what it was asked to run on
    served: str | None = None  # what its server says it runs on, once ready: "llama.cpp q8_0"
    state: str = "loading"  # loading | ready | failed (to load) | exited
    request: int | None = None  # the generation shown, while it runs
    tokens: int = 0  # generated so far by that generation
    began: float | None = None
    last_done: dict | None = None
    params: dict | None = None  # the sampling settings of the generation shown
    parameters: int | None = None
    context: int | None = None  # the model's max_seq_len: prompt and continuation together
    chat_problem: str | None = None  # why its server cannot chat, in one line (None: it can), once ready
    answer: Answer | None = None  # the chat answer the generation shown writes (None: a continuation)
    continued: str | None = None  # how its last continuation ended, for the saved session

    @property
    def generating(self) -> bool:
        return self.request is not None


def format_parameters(count: int | None) -> str:
    if count is None:
        return "?"
    for limit, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.1f}{unit}"
    return str(count)


def format_rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s:.1f} tok/s" if tokens_per_s < 100 else f"{tokens_per_s:,.0f} tok/s"


def engine_status(engine: Engine, now: float, width: int | None = None) -> Text:
    """A panel's subtitle: loading, or how the last generation went, or how the current one goes.
    Longer than `width` cells (two panels side by side at 80 columns), its words are shortened,
    and only then is the rate left out: how many tokens and why they stopped matter more."""
    if engine.state == "loading":
        return Text("loading…", style="italic")
    if engine.state == "failed":
        return Text("failed to load", style="bold red")
    if engine.state == "exited":
        return Text("server exited", style="bold red")
    if engine.generating:
        elapsed = now - engine.began if engine.began is not None else 0.0
        rate = f" · {format_rate(engine.tokens / elapsed)}" if elapsed > 0 and engine.tokens else ""
        return Text(f"▶ {engine.tokens} tokens{rate}", style="bold")
    done = engine.last_done
    if done is not None:
        tokens, stopped = done.get("tokens", 0), str(done.get("stopped"))
        rate = format_rate(done.get("tokens_per_s", 0.0))
        short = SHORT_STOP_LABELS.get(stopped, stopped)
        shortest = f"{tokens} tok · {short}"
        longer = (f"{tokens} tokens · {rate} · {stop_label(stopped, engine.context)}", f"{tokens} tok · {rate} · {short}")
        return Text(next((status for status in longer if width is None or cell_len(status) <= width), shortest))
    return Text(f"{format_parameters(engine.parameters)} params · ready")


# Why a generation ended, in a panel too narrow for stop_label's words.
SHORT_STOP_LABELS = {"eos": "end", "length": "max", "context": "ctx full", "cancelled": "stopped"}


def project_path(path: Path, root: Path) -> str:
    """`path` relative to the project when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def stop_label(stopped: str, context: int | None) -> str:
    """Why a generation ended, in a few words."""
    if stopped == "context":
        return f"context full ({context})" if context else "context full"
    return {"eos": "end of text", "length": "max tokens", "cancelled": "stopped"}.get(stopped, stopped)


def token_count(event: dict, counted: int) -> int:
    """Tokens generated so far after a token event; a server that does not count them gets one a piece."""
    tokens = event.get("tokens")
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else counted + 1


class PlaygroundScreen(AppScreen):
    COMMANDS = {ScreenKeysProvider, PlaygroundCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("ctrl+o", "pick_checkpoint", "Checkpoint"),
        Binding("ctrl+b", "pick_compare", "Compare"),
        # The ready hint names F1-3: the footer at 80 columns keeps its room for the modes.
        Binding("f1", "seed_prompt(0)", "Seed prompt 1", show=False),
        Binding("f2", "seed_prompt(1)", "Seed prompt 2", show=False),
        Binding("f3", "seed_prompt(2)", "Seed prompt 3", show=False),
        Binding("escape", "stop", "Stop"),
        # Two modes, text (continue a prompt) and chat; the footer offers the other one. The chat
        # hint names ctrl+r: at 80 columns the footer has no room for it while esc stops answers.
        Binding("ctrl+t", "chat_mode(True)", "Chat"),
        Binding("ctrl+t", "chat_mode(False)", "Text"),
        Binding("ctrl+r", "new_chat", "New chat: start the conversation over", show=False),
        # In the palette only: the footer has no room left at 80 columns, and ctrl+c is where users look for copy.
        Binding("ctrl+c", "copy", "Copy the focused panel (else every panel)", show=False),
        Binding("ctrl+y", "copy_all", "Copy every panel's text", show=False),
        Binding("ctrl+s", "save_session", "Save the session to out/playground/", show=False),
        # The panels' titles say which backend each runs on; the footer has no room at 80 columns.
        Binding("ctrl+g", "next_backend", "Run the checkpoints on the next backend", show=False),
        # Shown while a field has focus, where the number keys are typed: esc gets them back.
        Binding("escape", "leave_input", "Leave field"),
        Binding("enter", "focus_prompt", "Prompt", show=False),
    ]

    def __init__(self, serve_program: Sequence[str] = SERVE_PROGRAM,
                 backends: Sequence[BackendChoice] | None = None) -> None:
        """`serve_program` is what runs after the interpreter for each checkpoint (a stand-in server in
        tests); `backends` what ctrl+g cycles through, the first used at first (default: this machine's,
        fastest first)."""
        super().__init__()
        self.serve_program = tuple(serve_program)
        self.backends = tuple(backends or available_backends())
        self.backend = self.backends[0]
        self.engines: dict[str, Engine | None] = dict.fromkeys(SLOTS)
        self.closing: set[ServeClient] = set()
        self.prompt_input = PromptInput(placeholder=PROMPT_PLACEHOLDER, id="prompt", compact=True,
                                        select_on_focus=False)
        self.prompt_label = Label("prompt", id="prompt-label")
        self.system_input = Input(placeholder="the system prompt (optional), sent before the conversation",
                                  id="system-prompt", compact=True, select_on_focus=False)
        self.form = SamplingForm(id="sampling")
        self.history_list = OptionList(id="history")
        self.panels = {slot: ContinuationPanel(id=f"panel-{slot.lower()}") for slot in SLOTS}
        self.chatting = False
        self.conversation = Conversation()
        self.chat_panels = {slot: ConversationPanel(self.conversation, slot, id=f"chat-{slot.lower()}")
                            for slot in SLOTS}
        self.statuses: dict[str, Text] = {}  # the subtitle each panel shows

    def compose(self) -> ComposeResult:
        yield ModeHeader("playground")
        with Vertical(id="playground-body"):
            with Horizontal(id="prompt-row"):
                yield self.prompt_label
                yield self.prompt_input
            with Horizontal(id="system-row"):
                yield Label("system", id="system-label")
                yield self.system_input
            with Vertical(id="playground-side"):
                yield self.form
                yield Label("prompts this session (enter recalls)", id="history-title")
                yield self.history_list
            with Horizontal(id="continuations"):
                yield from self.panels.values()
            with Horizontal(id="conversations"):
                yield from self.chat_panels.values()
        yield KeyFooter()

    def panels_of(self, slot: str) -> tuple[ContinuationPanel, ConversationPanel]:
        """Panel `slot` in both modes: they show the same checkpoint."""
        return self.panels[slot], self.chat_panels[slot]

    @property
    def shown_panels(self) -> dict[str, ContinuationPanel]:
        return self.chat_panels if self.chatting else self.panels

    def on_mount(self) -> None:
        for panel in self.panels_of("B"):
            panel.display = False
        for panel in self.panels_of("A"):
            panel.border_title = "no checkpoint"
            panel.show_hint(NO_CHECKPOINT_HINT)
        self.set_interval(STATUS_S, self._show_rates)
        # Not the prompt: outside a text field the number keys switch screens, and typing goes to the prompt anyway.
        self.panels["A"].focus()
        first = self._first_checkpoint()
        if first is not None:
            self.load("A", first)
        self.app.runs_moved.subscribe(self, self._run_moved)

    def _run_moved(self, moved: tuple[Path, Path | None]) -> None:
        """A run renamed on the Train screen: a checkpoint of it loaded here is named by its new folder."""
        old, new = moved
        for slot, engine in self.engines.items():
            if new is not None and engine is not None and engine.choice.path.is_relative_to(old):
                engine.choice = moved_choice(engine.choice, old, new)
                self._show_title(engine)

    async def on_unmount(self) -> None:
        clients = [engine.client for engine in self.engines.values() if engine is not None] + list(self.closing)
        await asyncio.gather(*(client.close() for client in clients))

    def _first_checkpoint(self) -> CheckpointChoice | None:
        choices = list_checkpoints(self.app.root)
        followed = self.app.current_run
        if followed is not None:
            mine = [c for c in choices if c.path.parent.parent == followed]
            choices = mine + choices
        return next((c for c in choices if c.detail == "latest"), choices[0] if choices else None)

    # Loading and unloading checkpoints

    def load(self, slot: str, choice: CheckpointChoice) -> None:
        """Serve `choice` in `slot`, shutting down what was there; a checkpoint that is already
        served (or loading) there stays, with its continuation."""
        engine = self.engines[slot]
        if (engine is not None and engine.choice.path == choice.path and engine.backend == self.backend
                and engine.state in ("loading", "ready")):
            self.notify(f"{slot} has {engine.choice.label} loaded already")
            return
        self.unload(slot)
        client = ServeClient(choice.path, program=self.serve_program, extra_args=self.backend.serve_args,
                             cwd=self.app.root)
        engine = Engine(slot, choice, client, self.backend)
        self.engines[slot] = engine
        converting = " (the first time, it is converted to a GGUF file first)" if self.backend.backend == "llamacpp" else ""
        for panel in self.panels_of(slot):
            panel.display = True
            panel.show_hint(f"Loading {choice.path} on {self.backend.label}{converting}…")
        self._show_title(engine)
        self.chat_panels[slot].show_notice("")
        self._show_engine(engine)
        self.run_worker(self._serve(engine), group=f"serve-{slot}")

    def unload(self, slot: str) -> None:
        engine = self.engines[slot]
        if engine is None:
            return
        self.engines[slot] = None
        # Its answers were the old checkpoint's: the next one answers from its own first turn.
        self.conversation.forget(slot)
        for panel in self.chat_panels.values():
            panel.changed(now=True)
        self.closing.add(engine.client)
        self.run_worker(self._close(engine.client), group="serve-close")
        self._show_contexts()
        self.refresh_bindings()

    async def _close(self, client: ServeClient) -> None:
        await client.close()
        self.closing.discard(client)

    async def _serve(self, engine: Engine) -> None:
        try:
            await engine.client.start()
        except OSError as e:
            self._on_event(engine, {"event": "error", "message": f"could not start serve: {e}"})
            self._on_event(engine, {"event": "exit", "returncode": None, "stderr": ""})
            return
        async for event in engine.client.events():
            self._on_event(engine, event)

    # Events from a server

    def _on_event(self, engine: Engine, event: dict) -> None:
        if self.engines[engine.slot] is not engine:
            return  # a server being shut down after its checkpoint was replaced
        panel, chat_panel = self.panels_of(engine.slot)
        kind = event.get("event")
        current = engine.request is not None and event.get("id") == engine.request
        answer = engine.answer if current else None
        if kind == "token" and current:
            engine.tokens = token_count(event, engine.tokens)
            if answer is not None:
                answer.text += str(event.get("text", ""))
                chat_panel.changed()
            else:
                panel.add(str(event.get("text", "")))
            return
        if kind == "ready":
            engine.state = "ready"
            engine.served = served_label(event)
            self._show_title(engine)
            engine.parameters = event.get("parameters")
            context = (event.get("model") or {}).get("max_seq_len")
            engine.context = context if isinstance(context, int) else None
            engine.chat_problem = why_no_chat(event)
            if not engine.generating:
                panel.show_hint(READY_HINT)
            chat_panel.show_hint(CHAT_HINT)
            chat_panel.show_notice(engine.chat_problem or "")
        elif kind == "warning" and answer is not None:
            answer.note("warning", f"note: {event.get('message')}")
            chat_panel.changed(now=True)
        elif kind == "warning" and current:
            panel.add_note(f"note: {event.get('message')}", "yellow")
        elif kind == "done" and current:
            engine.request = None
            engine.last_done = event
            if answer is not None:
                self._answered(engine, event)
            else:
                self._continued(engine, event)
        elif kind == "error" and ("id" not in event or current):
            message = str(event.get("message"))
            if engine.state == "loading":
                engine.state = "failed"
                engine.request = None
                panel.show_hint("")
                panel.add_note(f"did not load: {message}", "bold red")
                chat_panel.show_notice(f"did not load: {message}")
            elif answer is not None:
                engine.request, engine.answer = None, None
                answer.fail(message)
                chat_panel.changed(now=True)
            else:
                if current:
                    engine.request, engine.continued = None, f"error: {message}"
                panel.add_note(f"error: {message}", "bold red")
        elif kind == "exit":
            self._on_exit(engine, event)
        self._show_engine(engine)

    def _continued(self, engine: Engine, event: dict) -> None:
        """A continuation has ended: how, in its panel."""
        panel = self.panels[engine.slot]
        engine.continued = engine_status(engine, time.monotonic()).plain
        if event.get("stopped") == "cancelled":
            panel.add_note("(stopped)", "italic yellow")
        elif event.get("stopped") == "context":
            size = f"{engine.context}-token " if engine.context else ""
            panel.add_note(f"(stopped: the prompt and the continuation fill the model's {size}context)",
                           "italic yellow")

    def _answered(self, engine: Engine, event: dict) -> None:
        """A chat answer has ended: how, under it."""
        answer, engine.answer = engine.answer, None
        answer.outcome = engine_status(engine, time.monotonic()).plain
        if event.get("stopped") == "cancelled":
            answer.note("stopped", "(stopped)")
        elif event.get("stopped") == "context":
            size = f"{engine.context}-token " if engine.context else ""
            answer.note("stopped", f"(stopped: the conversation and the answer fill the model's {size}context)")
        self.chat_panels[engine.slot].changed(now=True)

    def _on_exit(self, engine: Engine, event: dict) -> None:
        panel, chat_panel = self.panels_of(engine.slot)
        was_loading = engine.state == "loading"
        engine.request = None
        if engine.answer is not None:
            engine.answer.fail("the server exited before the answer ended")
            engine.answer = None
        if engine.state != "failed":
            engine.state = "exited"
            during = " while loading" if was_loading else ""
            panel.add_note(f"serve exited{during} with status {event.get('returncode')}", "bold red")
            if event.get("stderr"):
                panel.add_note(str(event["stderr"]).splitlines()[-1], "red")
            chat_panel.show_notice(f"serve exited{during} with status {event.get('returncode')}; "
                                   "ctrl+o loads a checkpoint again")

    def _show_contexts(self) -> None:
        self.form.show_contexts([e.context for e in self.engines.values()
                                 if e is not None and e.state == "ready" and e.context])

    def _show_engine(self, engine: Engine) -> None:
        self._show_status(engine)
        self._show_contexts()
        self.refresh_bindings()

    def _show_status(self, engine: Engine) -> None:
        panel = self.panels[engine.slot]
        # Of the box's whole width, the corners, a line each side and the spaces around the subtitle take six cells.
        width = panel.outer_size.width - 6 if panel.outer_size.width else None
        status = engine_status(engine, time.monotonic(), width)
        # Setting a subtitle repaints the panel: twice a second, unchanged, would be wasted on an SSH link.
        if self.statuses.get(engine.slot) != status:
            self.statuses[engine.slot] = status
            for shown in self.panels_of(engine.slot):
                shown.border_subtitle = status

    def _show_rates(self) -> None:
        """The live rates; and every subtitle again, fitted to its panel's width after a resize."""
        for engine in self.engines.values():
            if engine is not None:
                self._show_status(engine)

    def on_key(self, event: events.Key) -> None:
        """Typing outside the text fields goes to the prompt; keys with a binding keep their meaning."""
        if isinstance(self.focused, Input) or not event.is_printable or event.key in self.active_bindings:
            return
        event.stop()
        event.prevent_default()
        self.prompt_input.focus()
        self.prompt_input.insert_text_at_cursor(event.character or "")

    # Generating

    def live_engines(self) -> list[Engine]:
        return [e for e in self.engines.values() if e is not None and e.state in ("loading", "ready")]

    @property
    def generating(self) -> bool:
        return any(engine.generating for engine in self.live_engines())

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input is self.system_input:
            self.prompt_input.focus()
        elif event.input is self.prompt_input or event.input in self.form.inputs.values():
            self.send(self.prompt_input.value)

    @on(Input.Changed, "#system-prompt")
    def _system_changed(self, event: Input.Changed) -> None:
        self.conversation.system = event.value

    def send(self, text: str) -> bool:
        """What the prompt line is for in the mode shown: a prompt to continue, or a message to answer."""
        return self.ask(text) if self.chatting else self.continue_prompt(text)

    def checked_params(self) -> dict | None:
        """The sampling settings; None, with a message and the wrong field focused, when one is wrong."""
        params = self.form.params()
        if params is None:
            key, message = self.form.first_error()
            self.notify(f"Not started: {message}", severity="error")
            self.form.focus_field(key)
        return params

    def _no_engine(self) -> None:
        loaded = any(engine is not None for engine in self.engines.values())
        problem = "The checkpoint's server has ended; load it again" if loaded else "Load a checkpoint first"
        self.notify(f"{problem}: ctrl+o", severity="warning")

    def continue_prompt(self, prompt: str) -> bool:
        """Start `prompt` on every loaded checkpoint (stopping what runs); False, with a message, when it cannot."""
        params = self.checked_params()
        if params is None:
            return False
        engines = self.live_engines()
        if not engines:
            self._no_engine()
            return False
        self.prompt_input.remember(prompt)
        self._show_history()
        for engine in engines:
            panel = self.panels[engine.slot]
            try:
                if engine.request is not None:
                    engine.client.cancel(engine.request)
                    self._interrupt_answer(engine)
                engine.request = engine.client.generate(prompt, params)
            except ServeError as e:
                engine.request = None
                panel.add_note(str(e), "bold red")
                continue
            engine.tokens, engine.began, engine.last_done = 0, time.monotonic(), None
            engine.params = {**params, **engine.backend.generate_settings}
            engine.continued = None
            panel.start(prompt)
            self._show_engine(engine)
        return True

    def ask(self, message: str) -> bool:
        """Send `message` as the next user turn to every checkpoint that can chat, each with its own
        earlier answers; False, with a message, when it cannot be sent."""
        params = self.checked_params()
        if params is None:
            return False
        live = self.live_engines()
        if not live:
            self._no_engine()
            return False
        if any(engine.answer is not None for engine in live):
            self.notify("An answer is still coming: esc stops it, then send again", severity="warning")
            return False
        if not message.strip():
            self.notify("Type a message first", severity="warning")
            return False
        engines = [engine for engine in live if engine.state == "ready" and engine.chat_problem is None]
        if not engines:
            loading = [engine.slot for engine in live if engine.state == "loading"]
            problem = (f"{' and '.join(loading)} is still loading" if loading
                       else "No loaded checkpoint can chat: its panel says why")
            self.notify(f"Not sent: {problem}", severity="warning")
            return False
        self.prompt_input.remember(message)
        self._show_history()
        exchange = self.conversation.ask(message, [engine.slot for engine in engines],
                                         {**params, **self.backend.generate_settings})
        for engine in engines:
            answer = exchange.answers[engine.slot]
            try:
                if engine.request is not None:
                    engine.client.cancel(engine.request)
                    self.panels[engine.slot].add_note("(stopped)", "italic yellow")
                engine.request = engine.client.chat(self.conversation.messages(engine.slot), params)
            except ServeError as e:
                engine.request = None
                answer.fail(str(e))
                continue
            engine.answer, engine.tokens, engine.began, engine.last_done = answer, 0, time.monotonic(), None
            self._show_engine(engine)
        self.prompt_input.value = ""
        for panel in self.chat_panels.values():
            panel.changed(now=True)
        return True

    def _interrupt_answer(self, engine: Engine) -> None:
        """The chat answer `engine` writes, if any, ends where it is: a continuation took its place."""
        answer, engine.answer = engine.answer, None
        if answer is not None:
            answer.outcome = f"{engine.tokens} tokens · stopped"
            answer.note("stopped", "(stopped)")
            self.chat_panels[engine.slot].changed(now=True)

    def _show_history(self) -> None:
        self.history_list.clear_options()
        self.history_list.add_options(Option(prompt) for prompt in reversed(self.prompt_input.history))
        self.history_list.highlighted = 0

    @on(OptionList.OptionSelected, "#history")
    def _recall_selected(self, event: OptionList.OptionSelected) -> None:
        self.recall(str(event.option.prompt))

    def recall(self, prompt: str) -> None:
        """Put an earlier prompt back on the prompt line, to edit or to continue again."""
        self.prompt_input.value = prompt
        self.prompt_input.cursor_position = len(prompt)
        self.prompt_input.focus()

    # Actions

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "chat_mode":
            return parameters[0] != self.chatting
        if action == "new_chat":
            return self.chatting
        if action == "stop":
            return self.generating
        if action == "leave_input":
            return not self.generating and isinstance(self.focused, Input)
        return True

    def action_stop(self) -> None:
        for engine in self.live_engines():
            if engine.request is not None:
                try:
                    engine.client.cancel(engine.request)
                except ServeError as e:
                    self.panels[engine.slot].add_note(str(e), "bold red")

    def action_leave_input(self) -> None:
        """Out of the text fields, where the number keys switch screens again."""
        self.shown_panels["A"].focus()

    def action_focus_prompt(self) -> None:
        self.prompt_input.focus()

    def action_chat_mode(self, chatting: bool) -> None:
        """Chat (a conversation, with a system prompt) or continue text; each mode keeps what it showed."""
        focused = next((slot for slot, panel in self.shown_panels.items() if panel is self.focused), None)
        self.chatting = chatting
        self.set_class(chatting, "-chat")
        self.prompt_label.update("you" if chatting else "prompt")
        self.prompt_input.placeholder = MESSAGE_PLACEHOLDER if chatting else PROMPT_PLACEHOLDER
        if focused is not None:
            self.shown_panels[focused].focus()
        self.refresh_bindings()

    def action_new_chat(self) -> None:
        """Start the conversation over (the system prompt stays), stopping answers on their way."""
        for engine in self.live_engines():
            if engine.answer is not None:
                with suppress(ServeError):
                    engine.client.cancel(engine.request)
                engine.request, engine.answer = None, None
                self._show_engine(engine)
        self.conversation.reset()
        for panel in self.chat_panels.values():
            panel.changed(now=True)

    def shown_text(self, slot: str) -> str:
        """What panel `slot` shows: the prompt and its continuation, without notes; or in chat mode its conversation."""
        if self.engines[slot] is None:
            return ""
        if self.chatting:
            return self.conversation.transcript(slot)
        panel = self.panels[slot]
        return panel.prompt + panel.text

    def panel_title(self, slot: str) -> str:
        """"A · tiny step 5,000 · llama.cpp q8_0": the panel, its checkpoint and what runs it."""
        engine = self.engines[slot]
        return f"{slot} · {engine.choice.label} · {engine.served or engine.backend.label}"

    def _show_title(self, engine: Engine) -> None:
        for panel in self.panels_of(engine.slot):
            panel.border_title = self.panel_title(engine.slot)

    def action_next_backend(self) -> None:
        """Run the loaded checkpoints, and those loaded next, on the next backend of `backends`."""
        self.use_backend(self.backends[(self.backends.index(self.backend) + 1) % len(self.backends)])

    def use_backend(self, backend: BackendChoice) -> None:
        self.backend = backend
        loaded = [engine for engine in self.engines.values() if engine is not None]
        for engine in loaded:
            self.load(engine.slot, engine.choice)
        others = "" if len(self.backends) > 1 else " (the only backend here: pip install -e \".[llamacpp]\" adds llama.cpp)"
        self.notify(f"Checkpoints run on {backend.label}{others}" + ("; reloading" if loaded else ""))

    def action_copy(self) -> None:
        if self.get_selected_text():
            self.action_copy_text()
            return
        focused = [slot for slot, panel in self.shown_panels.items() if panel is self.focused]
        self.copy_panels(focused or list(SLOTS))

    def action_copy_all(self) -> None:
        self.copy_panels(list(SLOTS))

    def copy_panels(self, slots: list[str]) -> None:
        """Put the text of `slots`' panels on the clipboard (the terminal's too, by OSC 52, so over SSH
        as well), each under its checkpoint when there are several, and say what was copied."""
        shown = [slot for slot in slots if self.shown_text(slot)]
        if not shown:
            where = slots[0] if len(slots) == 1 else "any panel"
            what = "conversation" if self.chatting else "continuation"
            self.notify(f"Nothing to copy yet: {where} holds no {what}", severity="warning")
            return
        if len(shown) == 1:
            text = self.shown_text(shown[0])
        else:
            text = "\n\n".join(f"[{self.panel_title(slot)}]\n{self.shown_text(slot)}" for slot in shown)
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {len(text):,} characters from {' and '.join(map(self.panel_title, shown))}")

    def action_save_session(self) -> None:
        """Write each panel's checkpoint, prompt, settings and continuation, then each panel's
        conversation, to a new file under out/playground/."""
        records, chats = [], []
        for slot, engine in self.engines.items():
            if engine is None:
                continue
            checkpoint = project_path(engine.choice.path, self.app.root)
            if engine.params is not None:
                if engine.generating and engine.answer is None:
                    outcome = f"still generating when saved ({engine.tokens} tokens so far)"
                else:
                    outcome = engine.continued or "stopped before it ended"
                records.append(PanelRecord(self.panel_title(slot), checkpoint, self.panels[slot].prompt,
                                           engine.params, self.panels[slot].text, outcome))
            turns = self.conversation.answered(slot)
            if turns:
                chats.append(ChatRecord(self.panel_title(slot), checkpoint, turns))
        if not records and not chats:
            self.notify("Nothing to save yet: continue a prompt or chat first", severity="warning")
            return
        now = self.app.clock()
        text = session_markdown(records, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)), chats)
        try:
            path = save_session(self.app.root / "out" / "playground", text, now)
        except OSError as e:
            self.notify(f"Not saved: {e.strerror or e}: {e.filename}", severity="error")
            return
        self.notify(f"Saved the session to {project_path(path, self.app.root)}")

    def action_seed_prompt(self, index: int) -> None:
        from babyllama.generate import SEED_PROMPTS

        self.prompt_input.value = SEED_PROMPTS[index]
        self.send(SEED_PROMPTS[index])

    def action_pick_checkpoint(self) -> None:
        current = self.engines["A"]

        def picked(answer: PickedCheckpoint | None) -> None:
            if answer is not None and answer.choice is not None:
                self.load("A", answer.choice)

        self.app.push_screen(CheckpointPicker("Continue prompts with which checkpoint?", self.app.root,
                                              current=current.choice.path if current else None), picked)

    def action_pick_compare(self) -> None:
        current = self.engines["B"]
        loaded = self.engines["A"]

        def picked(answer: PickedCheckpoint | None) -> None:
            if answer is None:
                return
            if answer.choice is None:
                self.unload("B")
                self.panels["B"].display = False
            else:
                self.load("B", answer.choice)

        self.app.push_screen(CheckpointPicker("Compare with which checkpoint? (same prompt, side by side)",
                                              self.app.root, none_label="no comparison",
                                              current=current.choice.path if current else None,
                                              other=loaded.choice.path if loaded else None), picked)
