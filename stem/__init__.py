"""Stem's user-facing side: the Textual app and the command line, both over `core.Hive`."""
