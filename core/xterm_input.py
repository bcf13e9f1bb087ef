"""What a terminal sends to the program in it, as xterm sends it: keys, mouse reports and focus reports.

Keys come named as Textual names them ("up", "ctrl+c", "alt+b", "f5"), with their character and, when the user's
terminal reported them, the bytes it sent (`key_bytes`). A program sees the bytes xterm would send for its modes:
cursor keys in application mode (DECCKM), the keypad in application mode (DECKPAM), modifiers in xterm's
`CSI 1;m X` form, alt as an ESC before the key. Mouse reports follow the tracking mode the program asked for
(9, 1000, 1002, 1003) in SGR form (1006) or xterm's legacy one.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "FOCUS_IN",
    "FOCUS_OUT",
    "MouseAction",
    "encode_key",
    "key_bytes",
    "keypad_bytes",
    "mouse_report",
]

_CSI = "\x1b["
_SS3 = "\x1bO"
FOCUS_IN: Final = b"\x1b[I"
FOCUS_OUT: Final = b"\x1b[O"

# Cursor and home/end keys: final byte; SS3 form in application cursor mode, CSI 1;m form with modifiers.
_CURSOR_KEYS = {"up": "A", "down": "B", "right": "C", "left": "D", "home": "H", "end": "F"}
# Keys sent as CSI n ~.
_TILDE_KEYS = {
    "insert": 2,
    "delete": 3,
    "pageup": 5,
    "pagedown": 6,
    "f5": 15,
    "f6": 17,
    "f7": 18,
    "f8": 19,
    "f9": 20,
    "f10": 21,
    "f11": 23,
    "f12": 24,
}
_SS3_KEYS = {"f1": "P", "f2": "Q", "f3": "R", "f4": "S"}
_PLAIN_KEYS = {
    "enter": "\r",
    "tab": "\t",
    "shift+tab": _CSI + "Z",
    "escape": "\x1b",
    "backspace": "\x7f",
    "space": " ",
    "ctrl+space": "\x00",
    "ctrl+@": "\x00",
    "ctrl+backslash": "\x1c",
    "ctrl+right_square_bracket": "\x1d",
    "ctrl+circumflex_accent": "\x1e",
    "ctrl+underscore": "\x1f",
}
_MODIFIER_BITS = {"shift": 1, "alt": 2, "meta": 2, "ctrl": 4}

# The keypad in application mode (DECKPAM): SS3 and a letter; in numeric mode, what its key is labelled with.
_KEYPAD: Final = {
    "0": ("p", "0"),
    "1": ("q", "1"),
    "2": ("r", "2"),
    "3": ("s", "3"),
    "4": ("t", "4"),
    "5": ("u", "5"),
    "6": ("v", "6"),
    "7": ("w", "7"),
    "8": ("x", "8"),
    "9": ("y", "9"),
    "decimal": ("n", "."),
    "divide": ("o", "/"),
    "multiply": ("j", "*"),
    "subtract": ("m", "-"),
    "add": ("k", "+"),
    "separator": ("l", ","),
    "equal": ("X", "="),
    "enter": ("M", "\r"),
}
# The keypad as terminals report it: SS3 in application mode, kitty's own key codes (57399 KP_0 ...).
_SENT_KEYPAD: Final = {
    **{f"{_SS3}{app}": name for name, (app, _numeric) in _KEYPAD.items()},
    **{f"{_CSI}{57399 + i}u": str(i) for i in range(10)},
    **{
        f"{_CSI}{code}u": name
        for code, name in (
            (57409, "decimal"),
            (57410, "divide"),
            (57411, "multiply"),
            (57412, "subtract"),
            (57413, "add"),
            (57414, "enter"),
            (57415, "equal"),
            (57416, "separator"),
        )
    },
}
# A key as the kitty keyboard protocol reports it: the bytes say nothing a program expecting xterm's keys would
# understand, so such keys are encoded from their name.
_KITTY = re.compile(r"\x1b\[[\d:;]*u")
# Keys whose sequences terminals and tmux spell differently: what xterm sends is rebuilt from their names.
_FUNCTION_KEYS: Final = frozenset({*_CURSOR_KEYS, *_TILDE_KEYS, *_SS3_KEYS, "tab"})


def encode_key(key: str, app_cursor: bool = False, *, character: str | None = None) -> bytes:
    """The bytes an xterm sends for a Textual key name ("up", "ctrl+c", "shift+tab", "f5", "alt+b").

    `app_cursor` is the screen's DECCKM mode. A name this does not know gives its `character` (ESC before it
    with alt), or b"" without one.
    """
    if key in _PLAIN_KEYS:
        return _PLAIN_KEYS[key].encode()
    if len(key) == 1:
        return key.encode()
    *mods, base = key.split("+")
    if not base:  # "ctrl++" and the like: the key is "+"
        mods, base = mods[:-1], "+"
    if any(m not in _MODIFIER_BITS for m in mods):
        return b""
    bits = 0
    for mod in mods:
        bits |= _MODIFIER_BITS[mod]

    if base in _CURSOR_KEYS:
        final = _CURSOR_KEYS[base]
        if bits:
            return f"{_CSI}1;{bits + 1}{final}".encode()
        return ((_SS3 if app_cursor else _CSI) + final).encode()
    if base in _TILDE_KEYS:
        number = _TILDE_KEYS[base]
        return (f"{_CSI}{number};{bits + 1}~" if bits else f"{_CSI}{number}~").encode()
    if base in _SS3_KEYS:
        final = _SS3_KEYS[base]
        return (f"{_CSI}1;{bits + 1}{final}" if bits else _SS3 + final).encode()

    if (
        "ctrl" in mods
        and "alt" not in mods
        and "meta" not in mods
        and len(base) == 1
        and base.isascii()
        and base.isalpha()
    ):
        return bytes([ord(base.lower()) & 0x1F])  # ctrl+shift+a is ctrl+a: xterm's legacy keys cannot say shift
    if "alt" in mods or "meta" in mods:
        # Alt (meta) sends ESC before what the key sends without it.
        rest = "+".join(m for m in mods if m not in ("alt", "meta"))
        inner = encode_key(f"{rest}+{base}" if rest else base, app_cursor, character=character)
        return b"\x1b" + inner if inner else b""
    if mods == ["shift"] and len(base) == 1:
        return base.upper().encode()
    return character.encode("utf-8", "surrogateescape") if character else b""


def keypad_bytes(name: str, app_keypad: bool) -> bytes:
    """A keypad key ("0".."9", "enter", "add", ...) for the keypad mode the program asked for."""
    app, numeric = _KEYPAD[name]
    return (_SS3 + app if app_keypad else numeric).encode()


def key_bytes(
    key: str, character: str | None, sent: str | None, *, app_cursor: bool = False, app_keypad: bool = False
) -> bytes:
    """What xterm sends the program for a key Textual named `key` (with `character`), which the user's terminal
    reported as `sent` (None when unknown: a key made up by the app or a test).

    Characters and ESC + a character (alt, or Esc typed just before a key) go as the user's terminal sent them,
    so nothing is lost to Textual's names (alt+: has none, ESC b is not ctrl+left). Function keys (cursor keys,
    Home/End, Insert/Delete, PgUp/PgDn, F1-F12, with modifiers) are encoded as xterm encodes them, whatever
    form the user's terminal (or tmux: Home is CSI 1 ~ there) used, in the program's cursor mode (DECCKM); the
    keypad follows the program's keypad mode (DECKPAM); a key reported in the kitty protocol is encoded from its
    name. A sequence with no such name goes as it came.
    """
    if sent is None:
        return encode_key(key, app_cursor, character=character)
    keypad = _SENT_KEYPAD.get(sent)
    if keypad is not None:
        return keypad_bytes(keypad, app_keypad)
    if len(sent) > 1 and sent[0] == "\x1b" and sent[1] in "[O":
        if _KITTY.fullmatch(sent) is not None:
            return encode_key(key, app_cursor, character=character)
        if key.rpartition("+")[2] in _FUNCTION_KEYS:
            data = encode_key(key, app_cursor)
            if data:
                return data
    return sent.encode("utf-8", "surrogateescape")


MouseAction = Literal["press", "release", "motion", "wheel_up", "wheel_down", "wheel_left", "wheel_right"]
_WHEEL: Final = {"wheel_up": 64, "wheel_down": 65, "wheel_left": 66, "wheel_right": 67}


def mouse_report(
    action: MouseAction,
    button: int,
    x: int,
    y: int,
    *,
    tracking: int,
    sgr: bool,
    shift: bool = False,
    meta: bool = False,
    ctrl: bool = False,
) -> bytes:
    """The report xterm sends for a mouse event at cell (`x`, `y`) (from 0) under the program's `tracking` mode
    (9, 1000, 1002, 1003; 0: none) in SGR form or not; b"" when that mode does not report it. `button` is 1 left,
    2 middle, 3 right, 0 none (motion without a button)."""
    if tracking not in (9, 1000, 1002, 1003):
        return b""
    if action in _WHEEL:
        if tracking == 9:
            return b""
        code = _WHEEL[action]
    elif action == "motion":
        if tracking == 1003 or (tracking == 1002 and button):
            code = 32 + (button - 1 if button else 3)
        else:
            return b""
    else:
        if tracking == 9 and action == "release":
            return b""
        if not 1 <= button <= 3:
            return b""
        code = button - 1
        if action == "release" and not sgr:
            code = 3  # the legacy form cannot say which button was released
    if tracking != 9:
        code |= (4 if shift else 0) | (8 if meta else 0) | (16 if ctrl else 0)
    if sgr:
        return f"{_CSI}<{code};{x + 1};{y + 1}{'m' if action == 'release' else 'M'}".encode()
    if x + 1 > 223 or y + 1 > 223:
        return b""  # beyond what one byte can carry in the legacy form
    return bytes([0x1B, 0x5B, 0x4D, 32 + code, 33 + x, 33 + y])
