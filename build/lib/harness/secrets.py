"""Secrets that never reach a log, a report or an exception: a holder with a redacted repr, and a scrubber."""

from __future__ import annotations

import os
import secrets as _secrets
from dataclasses import dataclass, field

REDACTED = "***"


@dataclass(frozen=True)
class Secret:
    """A password. ``str()`` and ``repr()`` are redacted; ``reveal()`` is the only way to the value."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    @classmethod
    def generate(cls) -> Secret:
        return cls(_secrets.token_urlsafe(24))

    @classmethod
    def from_env_or_generate(cls, variable: str) -> Secret:
        value = os.environ.get(variable, "")
        return cls(value) if value else cls.generate()

    def scrub(self, text: str) -> str:
        """The text with every occurrence of the secret replaced."""
        return text.replace(self._value, REDACTED) if self._value else text
