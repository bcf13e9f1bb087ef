"""The colony host: one detached process per running colony that owns its runtime; clients speak `protocol`."""
