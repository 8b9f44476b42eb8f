"""Files: atomic writes (a failed run never leaves a half-written output behind), checked JSON reads, digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it over ``final``, on error remove it.

    The temporary name starts with ``.`` and ends with ``.tmp`` so it is easy to spot and ignore.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates the file (or, with is_dir, the directory) itself
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists() or final.is_symlink():
            final.unlink()
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def cpu_name() -> str:
    """The CPU's model name (benchmarks record the machine they ran on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def read_json_document(path: str | os.PathLike[str], *, what: str, error: type[Exception],
                       fmt: str | None = None, version: object = None, hint: str = "") -> dict[str, Any]:
    """A JSON object from ``path`` whose ``format`` / ``format_version`` keys are ``fmt`` / ``version`` (when given).

    Every fault is one sentence in ``error``: ``what`` names the document ("clip store index"), ``hint`` says what
    to do and ends the sentences about an unreadable or out-of-date file.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        raise error(f"{what} {path} does not exist{tail}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what} {path} is corrupt ({str(exc).splitlines()[0]}){tail}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} does not hold a JSON object{tail}")
    if fmt is not None and data.get("format") != fmt:
        raise error(f"{path} is not a {what} (format {data.get('format')!r}, expected {fmt!r})")
    if version is not None and data.get("format_version") != version:
        raise error(f"{what} {path} has format version {data.get('format_version')!r}, but this pwm reads version "
                    f"{version!r}{tail}")
    return data
