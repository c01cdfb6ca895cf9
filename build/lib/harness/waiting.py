"""The one way to wait: a deadline, a named subject, and the last thing seen in the error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """Raised when a wait's deadline passes; the message names what was awaited and what was last seen."""


def wait_until(
    what: str,
    probe: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value (returned) or ``timeout_s`` passes.

    Exceptions from the probe count as "not yet" and the last one is reported, like Ray's
    ``wait_for_condition``. ``describe`` adds context to the timeout message (e.g. a log tail).
    """
    last: list[str] = ["nothing yet"]

    def attempt() -> T:
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - a failing probe is "not yet", and is reported
            last[0] = f"{type(exc).__name__}: {exc}"
            raise
        if not value:
            last[0] = f"probe returned {value!r}"
            raise _NotYet()
        return value

    try:
        return tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout_s),
            wait=tenacity.wait_fixed(interval_s),
            retry=tenacity.retry_if_exception_type(Exception),
            reraise=False,
        )(attempt)
    except tenacity.RetryError:
        extra = ""
        if describe is not None:
            try:
                extra = "\n" + describe()
            except Exception as exc:  # noqa: BLE001
                extra = f"\n(could not describe: {exc})"
        raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}; last seen: {last[0]}{extra}") from None


class _NotYet(Exception):
    pass


class HoldBroken(AssertionError):
    """A property that had to hold through an observation window stopped holding."""


def hold_for(what: str, probe: Callable[[], object], *, seconds: float, interval_s: float = 0.2) -> None:
    """A negative wait, and the harness's one named observation window: ``probe`` must stay truthy for
    ``seconds`` (e.g. "the PID must not change for 5 s"). Raises HoldBroken at the first sample where it is not."""
    import time

    deadline = time.monotonic() + seconds
    stop = threading.Event()
    while True:
        value = probe()
        if not value:
            raise HoldBroken(f"{what} stopped holding {seconds - (deadline - time.monotonic()):.1f}s into a "
                             f"{seconds:g}s window (probe returned {value!r})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        stop.wait(min(interval_s, remaining))


def observation_window(what: str, seconds: float) -> None:
    """The one plain pause the harness allows: a named window during which something is observed
    (traffic keeps running and being recorded). It waits for nothing; it lets time pass on purpose."""
    if seconds > 0:
        threading.Event().wait(seconds)
