"""The dialogs that bring a colony's work back: merge (`m`) and commit (`c`).

The merge dialog says what will land where before anything changes: the target, ahead/behind, each file with its
+/- lines (uncommitted ones marked: a merge takes commits only), and the conflicts merge-tree found, in which case
it refuses and says how to resolve them. The commit dialog asks for the message and lists what it commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from core.merge import ColonyDiff, MergeState, MergeStatus
from core.words import plural
from stem.keys import bind
from stem.widgets.dialogs import DialogBody

__all__ = ["CommitDialog", "MergeChoice", "MergeDialog"]

_STATUS_LETTER = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R"}
_STATUS_STYLE = {"added": "$success", "modified": "$warning", "deleted": "$error", "renamed": "$accent"}
_MAX_FILES = 200


@dataclass(frozen=True, slots=True)
class MergeChoice:
    squash: bool


def _files(diff: ColonyDiff, conflicts: frozenset[str] = frozenset()) -> list[Content]:
    lines: list[Content] = []
    width = min(48, max((len(f.path) for f in diff.files), default=8))
    for change in diff.files[:_MAX_FILES]:
        notes: list[Content] = []
        if change.path in conflicts:
            notes.append(Content.styled("  conflicts", "bold $error"))
        if change.path in diff.uncommitted:
            notes.append(Content.styled("  uncommitted: not merged (c commits it)", "$warning"))
        path = change.path if len(change.path) <= width else "…" + change.path[-(width - 1) :]
        lines.append(
            Content.assemble(
                "  ",
                Content.styled(_STATUS_LETTER.get(change.status, "?"), _STATUS_STYLE.get(change.status, "$text-muted")),
                " ",
                f"{path:<{width}}",
                "  ",
                Content.styled(f"+{change.added}", "$success"),
                " ",
                Content.styled(f"-{change.removed}", "$error"),
                *notes,
            )
        )
    if len(diff.files) > _MAX_FILES:
        lines.append(Content.styled(f"  … and {len(diff.files) - _MAX_FILES} more", "$text-muted"))
    return lines


class MergeDialog(ModalScreen[MergeChoice | None]):
    """`y` (or the button) merges through the core; `s` toggles squash; esc cancels. Refuses while conflicting."""

    BINDINGS = [bind("dialog.cancel"), bind("merge.confirm"), bind("merge.squash")]

    def __init__(self, name: str, diff: ColonyDiff, status: MergeStatus | None, checkout: str = "") -> None:
        """`checkout`: why the checkout of the target would refuse the merge now (core.merge.checkout_problem)."""
        super().__init__(id="merge-dialog")
        self.colony = name
        self.diff = diff
        self.status = status
        self.checkout = checkout
        self.target = (status.target if status is not None else "") or diff.target

    @property
    def blocked(self) -> str:
        """Why the merge cannot go ahead ("" when it can)."""
        status = self.status
        if status is None:
            return "its merge status could not be computed"
        if status.state == MergeState.CONFLICTS:
            return (
                f"{self.colony} conflicts with {status.target} in {plural(len(status.conflicts), 'file')}: nothing "
                f"merged. u syncs {status.target} into the colony so its agent resolves them"
            )
        if status.state == MergeState.NOTHING:
            return f"nothing to merge: {status.target} has every commit of {self.colony}" + (
                " (c commits its uncommitted work first)" if self.diff.uncommitted else ""
            )
        if status.state == MergeState.UNKNOWN:
            return status.error or status.note or "no target to merge into"
        return self.checkout

    def _summary(self, squash: bool = False) -> Content:
        status = self.status
        if status is None:
            return Content.styled("merge status unknown", "$error")
        arrows = Content.styled(f"↑{status.ahead} ahead  ↓{status.behind} behind", "$text-muted")
        if status.state == MergeState.CONFLICTS:
            verdict = Content.styled(status.summary, "bold $error")
        elif status.state in (MergeState.CLEAN, MergeState.FAST_FORWARD):
            how = "one squash commit" if squash else "fast-forward"
            if not squash and status.state != MergeState.FAST_FORWARD:
                how = "merge commit"
            verdict = Content.assemble(
                Content.styled("✓ merges clean", "$success"), Content.styled(f" ({how})", "$text-muted")
            )
        else:
            verdict = Content.styled(status.summary, "$warning")
        return Content.assemble(arrows, "   ", verdict)

    def compose(self) -> ComposeResult:
        blocked = self.blocked
        conflicts = frozenset(self.status.conflicts) if self.status is not None else frozenset()
        added = sum(f.added for f in self.diff.files)
        removed = sum(f.removed for f in self.diff.files)
        with Vertical(classes="dialog merge"):
            with DialogBody():
                yield Static(
                    Content.assemble(
                        "Merge ",
                        Content.styled(self.colony, "bold"),
                        " into ",
                        Content.styled(self.target or "?", "bold $accent"),
                    ),
                    classes="dialog-title",
                )
                yield Static(self._summary(), id="merge-summary")
                head = Content.assemble(
                    Content.styled(f"\n{plural(len(self.diff.files), 'file')}", "bold"),
                    "  ",
                    Content.styled(f"+{added}", "$success"),
                    " ",
                    Content.styled(f"-{removed}", "$error"),
                )
                body = (
                    [head, *_files(self.diff, conflicts)]
                    if self.diff.files
                    else [Content.styled("\nno changed files", "$text-muted")]
                )
                if conflicts:
                    body.append(Content.styled("\nConflicts with the target (merge-tree)", "bold $error"))
                    body += [Content.styled(f"  {path}", "$error") for path in sorted(conflicts)]
                with VerticalScroll(id="merge-files"):
                    yield Static(Content("\n").join(body))
                yield Checkbox("squash into one commit (s)", id="merge-squash")
                yield Static(Content.styled(blocked, "$error") if blocked else "", id="merge-blocked")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Merge (y)", variant="primary", id="merge-yes", disabled=bool(blocked))
                yield Button("Cancel (esc)", id="merge-no")

    def on_mount(self) -> None:
        self.query_one("#merge-squash", Checkbox).can_focus = False  # `s` toggles it; the buttons keep the focus
        button = self.query_one("#merge-no" if self.blocked else "#merge-yes", Button)
        button.focus()

    def action_toggle_squash(self) -> None:
        box = self.query_one("#merge-squash", Checkbox)
        box.value = not box.value

    @on(Checkbox.Changed, "#merge-squash")
    def _squash_changed(self, event: Checkbox.Changed) -> None:
        # What the merge will make: a squash is one new commit on the target, never a fast-forward.
        self.query_one("#merge-summary", Static).update(self._summary(event.value))

    @on(Button.Pressed, "#merge-yes")
    def action_confirm(self) -> None:
        if self.blocked:
            self.notify(self.blocked, severity="error", timeout=8)
            return
        self.dismiss(MergeChoice(squash=self.query_one("#merge-squash", Checkbox).value))

    @on(Button.Pressed, "#merge-no")
    def action_cancel(self) -> None:
        self.dismiss(None)


class CommitDialog(ModalScreen[str | None]):
    """The commit message for the colony's uncommitted work; enter commits, esc cancels."""

    BINDINGS = [bind("dialog.cancel")]

    def __init__(self, name: str, branch: str, files: list[str]) -> None:
        super().__init__(id="commit-dialog")
        self.colony = name
        self.branch = branch
        self.files = files

    def compose(self) -> ComposeResult:
        listed = ", ".join(self.files[:8]) + (f" and {len(self.files) - 8} more" if len(self.files) > 8 else "")
        with Vertical(classes="dialog commit"):
            with DialogBody():
                yield Static(
                    Content.assemble(
                        "Commit ",
                        Content.styled(self.colony, "bold"),
                        "'s work on ",
                        Content.styled(self.branch, "bold $accent"),
                    ),
                    classes="dialog-title",
                )
                yield Static(Content.styled(f"{plural(len(self.files), 'uncommitted file')}: {listed}", "$text-muted"))
                yield Static("Message", classes="field-label")
                yield Input(placeholder="what this work does", id="commit-message")
                yield Static("", id="commit-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Commit (enter)", variant="primary", id="commit-yes")
                yield Button("Cancel (esc)", id="commit-no")

    def on_mount(self) -> None:
        box = self.query_one("#commit-message", Input)
        box.cursor_blink = getattr(self.app, "blink", True)
        box.focus()

    @on(Input.Submitted, "#commit-message")
    @on(Button.Pressed, "#commit-yes")
    def _commit(self) -> None:
        message = self.query_one("#commit-message", Input).value.strip()
        if not message:
            self.query_one("#commit-error", Static).update("a commit needs a message")
            return
        self.dismiss(message)

    @on(Button.Pressed, "#commit-no")
    def action_cancel(self) -> None:
        self.dismiss(None)
