"""CheckList: a SelectionList whose unchosen entries show an empty box."""

from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import Checkbox, SelectionList
from textual.widgets.selection_list import SelectionType


class CheckList(SelectionList[SelectionType]):
    """Space toggles an entry. SelectionList draws the same X for chosen and unchosen entries,
    told apart by colour alone; here an unchosen one shows an empty box. Some entry is
    highlighted whenever the list has focus, so the first Down moves to the second entry rather
    than highlighting the first.
    """

    def on_focus(self) -> None:
        if self.highlighted is None:
            self.action_first()

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        index = self.scroll_offset.y + y
        if index >= self.option_count or self.get_option_at_index(index).value in self.selected:
            return strip
        segments = list(strip)
        if len(segments) < 2 or segments[1].text != Checkbox.BUTTON_INNER:
            return strip
        segments[1] = Segment(" ", segments[1].style)
        return Strip(segments, strip.cell_length)
