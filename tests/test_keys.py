"""The one table of keys (stem/keys.py): every binding of Stem's app, screens and widgets comes from it, so a remap in
config.toml moves every place a key works, and `?`, the hint bar and the palette never miss one."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from textual.binding import Binding
from textual.dom import DOMNode

import stem
import stem.widgets
from stem.keys import KEYS


def stem_nodes() -> list[type[DOMNode]]:
    """The app, screen and widget classes defined in stem/."""
    found: list[type[DOMNode]] = []
    for package in (stem, stem.widgets):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for _name, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, DOMNode) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def test_every_binding_has_an_id_from_the_keys_table():
    nodes = stem_nodes()
    assert len(nodes) > 10
    outside = []
    for cls in nodes:
        for binding in cls.__dict__.get("BINDINGS", []):
            if not isinstance(binding, Binding) or binding.id not in KEYS:
                outside.append(f"{cls.__name__}: {binding!r}")
            elif binding.key != KEYS[binding.id].keys:
                outside.append(f"{cls.__name__}: {binding.id} bound to {binding.key}, the table says so otherwise")
    assert not outside, "bindings outside stem/keys.py: " + "; ".join(outside)


def test_no_key_is_handled_outside_the_table():
    """A `key_*` method or an `on_key` handler would work whatever the keymap says (the terminal's `_on_key` hands
    every key to the agent: that is the point of it)."""
    handlers = [
        f"{cls.__name__}.{name}"
        for cls in stem_nodes()
        for name in cls.__dict__
        if name.startswith("key_") or name == "on_key"
    ]
    assert not handlers, handlers
