"""Widgets of the Stem app, one module per panel or dialog."""
