"""Atomic file output: a killed or failing run never leaves a half-written file or clobbers an old one.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_text(d / "a.json", "{}")
    >>> sorted(p.name for p in d.iterdir())
    ['a.json']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for ``dest``; on success move it (and any sidecar files written
    beside it, such as an XDMF file's ``.h5``) into place with :func:`os.replace`.

    The temporary directory lives in the destination's directory, so the rename stays on one file
    system and writers that name sidecars after the file's stem get the final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        tmp = tmpdir / dest.name
        yield tmp
        produced = sorted(tmpdir.iterdir(), key=lambda f: f == tmp)  # sidecars first, main file last
        for f in produced:
            os.replace(f, dest.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_output(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_output(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)
