"""Secrets out of reports: configuration keys redacted, and secret strings scrubbed from files.

- ``redact_config``: every key whose name contains ``password``, ``secret`` or ``token`` (any case, at any
  depth) has its value replaced by ``***``; the values so hidden are also scrubbed from every other string of
  the configuration (a URL with the password in it, say).
- ``scrub_tree`` / ``scrub_paths``: replace given secret strings in every text file under a folder (logs a
  report links to), or in given files (a junit XML file, an Allure results folder).
- ``scrub_test_report``: a pytest test report scrubbed in place (its traceback, crash message, captured output
  and log, properties), so that no reporter (terminal, junitxml, allure) sees a secret.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.secrets import REDACTED

SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
MIN_SCRUB_LEN = 8  # shorter values are redacted where their key is, but not hunted in other text


@dataclass(frozen=True)
class ConfigEntry:
    key: str  # dotted path, e.g. "redis.port"
    value: str  # JSON-ish text of the value, or REDACTED
    redacted: bool


@dataclass(frozen=True)
class RedactedConfig:
    entries: tuple[ConfigEntry, ...]
    tree: Mapping  # the configuration with secrets redacted (what config.redacted.json holds)
    hidden: tuple[str, ...]  # the secret values found (never rendered; used to scrub other text)

    def scrub(self, text: str) -> str:
        return scrub_text(text, self.hidden)


def _collect(value: object, hidden: list[str]) -> None:
    if isinstance(value, Mapping):
        for v in value.values():
            _collect(v, hidden)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, hidden)
    elif value not in (None, "") and not isinstance(value, bool):
        hidden.append(str(value))


def _redact(value: object, hidden: list[str]) -> object:
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            if SECRET_KEY.search(str(key)):
                _collect(v, hidden)
                out[str(key)] = REDACTED
            else:
                out[str(key)] = _redact(v, hidden)
        return out
    if isinstance(value, (list, tuple)):
        return [_redact(v, hidden) for v in value]
    return value


def _scrub_values(value: object, secrets: tuple[str, ...]) -> object:
    if isinstance(value, Mapping):
        return {k: _scrub_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_values(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value


def _flatten(value: object, prefix: str = "") -> list[ConfigEntry]:
    if isinstance(value, Mapping) and value:
        return [e for k, v in value.items() for e in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return [ConfigEntry(prefix, text, value == REDACTED)]


def redact_config(config: Mapping) -> RedactedConfig:
    hidden: list[str] = []
    tree = _redact(config, hidden)
    secrets = tuple(sorted(set(hidden), key=len, reverse=True))
    tree = _scrub_values(tree, secrets)
    assert isinstance(tree, Mapping)
    return RedactedConfig(tuple(_flatten(tree)), tree, secrets)


def scrub_text(text: str, secrets: Iterable[str], *, min_len: int = MIN_SCRUB_LEN) -> str:
    """``text`` with every secret at least ``min_len`` long replaced by ``***``."""
    for secret in secrets:
        if len(secret) >= min_len:
            text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class ScrubResult:
    scrubbed: tuple[Path, ...]  # text files that held a secret and were rewritten
    binary_with_secret: tuple[Path, ...]  # binary files that hold a secret, left as they are


def scrub_tree(root: Path, secrets: Iterable[str]) -> ScrubResult:
    """Replace every secret by ``***`` in every text file under ``root`` (symlinks are not followed).

    A file with a NUL byte in it counts as binary: rewriting it would damage it, so it is left alone and
    listed in ``binary_with_secret`` if it holds a secret. Files are rewritten atomically, mode kept.
    """
    return scrub_paths([Path(root)], secrets)


def scrub_paths(paths: Iterable[Path], secrets: Iterable[str], *, modified_since: float | None = None) -> ScrubResult:
    """``scrub_tree`` over several files and folders (a path that does not exist is skipped); with
    ``modified_since`` (a ``time.time()``), only files modified since then are read."""
    needles = [s.encode() for s in dict.fromkeys(secrets)]
    if not needles or not all(needles):
        raise ValueError("scrub_tree needs at least one secret, and no empty one")
    needles.sort(key=len, reverse=True)  # a secret that contains another goes first
    files: set[Path] = set()
    for root in map(Path, paths):
        files |= {root} if root.is_file() else set(root.rglob("*"))
    scrubbed, binary = [], []
    for path in sorted(files):
        if path.is_symlink() or not path.is_file():
            continue
        if modified_since is not None and path.stat().st_mtime < modified_since:
            continue
        data = path.read_bytes()
        if not any(n in data for n in needles):
            continue
        if b"\0" in data:
            binary.append(path)
            continue
        for needle in needles:
            data = data.replace(needle, REDACTED.encode())
        _replace_file(path, data)
        scrubbed.append(path)
    return ScrubResult(tuple(scrubbed), tuple(binary))


def _replace_file(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _scrub_object(value: object, secrets: tuple[str, ...], seen: set[int]) -> object:
    """``value`` with secrets replaced in every string it holds; dataclasses (pytest's traceback parts) are
    scrubbed in place, lists and tuples rebuilt."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, (list, tuple)):
        items = [_scrub_object(v, secrets, seen) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and id(value) not in seen:
        seen.add(id(value))
        for f in dataclasses.fields(value):
            try:
                setattr(value, f.name, _scrub_object(getattr(value, f.name), secrets, seen))
            except (AttributeError, dataclasses.FrozenInstanceError):
                continue  # left as it is; the rendered check below catches what stays
    return value


def scrub_test_report(report: object, secrets: Iterable[str]) -> bool:
    """Scrub a pytest ``TestReport`` (or ``CollectReport``) in place: its ``longrepr`` (traceback, assertion,
    crash message; its structure kept, so the terminal still colours it; replaced by its scrubbed text if a
    secret would still show), its ``sections`` (captured stdout, stderr and log), ``user_properties`` and
    ``wasxfail``. Returns whether a secret was found. Secrets of any length are scrubbed."""
    needles = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
    if not needles:
        return False

    def holds(text: str) -> bool:
        return any(n in text for n in needles)

    found = False
    longrepr = getattr(report, "longrepr", None)
    if longrepr is not None and holds(text := str(longrepr)):
        found = True
        scrubbed = _scrub_object(longrepr, needles, set())
        report.longrepr = scrubbed if not holds(str(scrubbed)) else _scrub_object(text, needles, set())  # type: ignore[attr-defined]
    for attr in ("sections", "user_properties", "wasxfail"):
        value = getattr(report, attr, None)
        if isinstance(value, (str, list, tuple)) and value:
            scrubbed = _scrub_object(value, needles, set())
            if scrubbed != value:
                found = True
                setattr(report, attr, scrubbed)
    return found
