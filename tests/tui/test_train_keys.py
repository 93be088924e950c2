"""Keys that reach the app in one read from the terminal (one SSH packet) edit a FieldInput in
the order they were typed."""

from __future__ import annotations

import pytest
from textual import events
from textual.app import App, ComposeResult

from babyllama_tui.widgets.field_input import FieldInput


class OneField(App):
    def compose(self) -> ComposeResult:
        yield FieldInput("45", kind="integer")


def key(name: str) -> events.Key:
    return events.Key(name, name if len(name) == 1 else None)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["backspace", "6"], "46"),
        (["left", "7"], "475"),
        (["home", "1", "end", "backspace", "9"], "149"),
        (["left", "left", "delete", "8", "right", "2"], "852"),
    ],
)
async def test_keys_posted_together_apply_in_the_order_they_came(keys, expected):
    app = OneField()
    async with app.run_test() as pilot:
        field = app.query_one(FieldInput)
        field.focus()
        await pilot.pause()
        # All posted before the app handles any, as keys read from one packet are.
        for name in keys:
            app.post_message(key(name))
        await pilot.pause()
        await pilot.pause()
        assert field.value == expected
