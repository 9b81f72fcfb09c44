"""Inspect AI entry point: registers the `emrgym_inspect/emrgym` task."""

from .task import emrgym  # noqa: F401
