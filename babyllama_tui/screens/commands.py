"""The command palette's providers: a screen's keys (`ScreenKeysProvider`) and the playground's own entries.

`ScreenKeysProvider` makes every key the footer shows, and every screen or app key with a
description, a palette entry of that name, so the two never drift apart; `bound_keys`, what it
lists, is what the help screen lists too. `PlaygroundCommands` adds seed prompts, sampling
settings, past prompts and checkpoints. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode
from textual.screen import Screen

# The palette's own key is no entry in it.
PALETTE_ITSELF = {"command_palette", "app.command_palette"}


@dataclass
class BoundKey:
    """One action of a screen's live bindings, with every key bound to it (the footer's first)."""

    description: str
    action: str
    node: DOMNode
    enabled: bool
    shown: bool
    keys: list[str] = field(default_factory=list)


def bound_keys(screen: Screen) -> list[BoundKey]:
    """The actions a screen's keys run now, each once, with a description: what the palette
    lists and the help screen shows. An action with several keys is listed under the key the
    footer shows first (q, not ^q)."""
    found: dict[str, BoundKey] = {}
    app = screen.app
    for active in screen.active_bindings.values():
        binding = active.binding
        if not binding.description:
            continue
        key = app.get_key_display(binding)
        entry = found.get(binding.action)
        if entry is None:
            found[binding.action] = BoundKey(binding.description, binding.action, active.node, active.enabled,
                                             binding.show, [key])
        elif key not in entry.keys:
            if binding.show and not entry.shown:
                entry.description, entry.shown = binding.description, True
                entry.keys.insert(0, key)
            else:
                entry.keys.append(key)
    return list(found.values())


class ScreenKeysProvider(Provider):
    def _commands(self) -> list[tuple[str, str, object, str]]:
        """(description, action, namespace, key) of the calling screen's enabled bindings that the
        footer shows or that belong to the screen or the app."""
        return [
            (entry.description, entry.action, entry.node, entry.keys[0])
            for entry in bound_keys(self.screen)
            if (entry.shown or isinstance(entry.node, (Screen, App)))
            and entry.enabled
            and entry.action not in PALETTE_ITSELF
        ]

    def _hit_command(self, action: str, namespace):
        return partial(self.app.run_action, action, namespace)

    async def discover(self) -> Hits:
        for description, action, namespace, key in self._commands():
            yield DiscoveryHit(description, self._hit_command(action, namespace), help=f"key: {key}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for description, action, namespace, key in self._commands():
            score = matcher.match(description)
            if score > 0:
                yield Hit(score, matcher.highlight(description), self._hit_command(action, namespace), help=f"key: {key}")


class PlaygroundCommands(Provider):
    """The playground's palette entries beyond its keys: each seed prompt by its text, each
    sampling setting to change, each prompt of the session to recall, each other backend to run
    the checkpoints on, and each saved checkpoint to load (or compare with) by name."""

    def _commands(self) -> list[tuple[str, object]]:
        from babyllama.generate import SEED_PROMPTS
        from babyllama_tui.widgets.checkpoint_picker import list_checkpoints
        from babyllama_tui.widgets.sampling_form import FIELDS

        screen = self.screen
        found = [(f"Continue the seed prompt {prompt}", partial(screen.action_seed_prompt, index))
                 for index, prompt in enumerate(SEED_PROMPTS)]
        found += [(f"Set the {field.long} ({field.help})", partial(screen.form.focus_field, field.key))
                  for field in FIELDS]
        found += [(f"Recall the prompt {prompt}", partial(screen.recall, prompt))
                  for prompt in reversed(screen.prompt_input.history)]
        found += [(f"Run the checkpoints on {backend.label}", partial(screen.use_backend, backend))
                  for backend in screen.backends if backend != screen.backend]
        for choice in list_checkpoints(self.app.root):
            found.append((f"Load {choice.label}", partial(screen.load, "A", choice)))
            found.append((f"Compare with {choice.label}", partial(screen.load, "B", choice)))
        return found

    async def discover(self) -> Hits:
        for description, command in self._commands()[:3]:
            yield DiscoveryHit(description, command)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for description, command in self._commands():
            score = matcher.match(description)
            if score > 0:
                yield Hit(score, matcher.highlight(description), command)
