"""The command palette's providers: a screen's keys (`ScreenKeysProvider`) and the playground's own entries.

`ScreenKeysProvider` makes every key the footer shows, and every screen or app key with a
description, a palette entry of that name, so the two never drift apart. `PlaygroundCommands`
adds seed prompts, sampling settings, past prompts and checkpoints. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from functools import partial

from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

# The palette's own key is no entry in it.
PALETTE_ITSELF = {"command_palette", "app.command_palette"}


class ScreenKeysProvider(Provider):
    def _commands(self) -> list[tuple[str, str, object, str]]:
        """(description, action, namespace, key) of the calling screen's enabled bindings; an
        action with several keys is listed once, under the key the footer shows (q, not ^q)."""
        found = {}
        for active in self.screen.active_bindings.values():
            binding = active.binding
            listed = binding.show or isinstance(active.node, (Screen, App))
            if not (listed and binding.description and active.enabled) or binding.action in PALETTE_ITSELF:
                continue
            if binding.action not in found or (binding.show and not found[binding.action][0]):
                found[binding.action] = (binding.show, (binding.description, binding.action, active.node,
                                                        self.app.get_key_display(binding)))
        return [command for _, command in found.values()]

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
    sampling setting to change, each prompt of the session to recall, and each saved checkpoint
    to load (or compare with) by name."""

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
