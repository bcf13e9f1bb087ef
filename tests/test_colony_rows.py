"""A colony's row in the Colonies panel is two lines at any panel width: what does not fit is cut with an ellipsis,
never wrapped into the place of the next row."""

from __future__ import annotations

import pytest

from stem.widgets.colonies import ColonyRow, _prompt


@pytest.mark.parametrize("width", [20, 30, 42, 60, 120])
def test_a_row_is_two_lines_that_fit_the_panel(width: int) -> None:
    row = ColonyRow(
        name="flask-frontend-experiment",
        state="running",
        stage="",
        branch="colony/flask-frontend-experiment",
        age="3h",
        activity="attention",
        title="Refactoring the login form and its tests",
        services_up=1,
        services=3,
        services_failed=1,
    )
    lines = _prompt(row, width).split("\n")
    assert len(lines) == 2
    for line in lines:
        assert line.cell_length <= width, (width, line.plain)
    if width >= 120:
        assert "Refactoring the login form" in lines[1].plain
    elif width <= 42:
        assert lines[1].plain.endswith("…")
