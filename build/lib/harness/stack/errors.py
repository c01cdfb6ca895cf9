"""The errors every backend raises: a stack that cannot be brought up or used, and a configuration that cannot
be used (``harness.stack.config.ConfigError``)."""

from __future__ import annotations

from harness.stack.config import ConfigError


class StackError(RuntimeError):
    """The stack cannot be brought up or used; the message says which part and why."""


__all__ = ["ConfigError", "StackError"]
