"""Content digests of folders, and dotted-key views of nested params: one helper each."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def tree_digest(
    root: str | Path,
    files: Iterable[Path] | None = None,
    *,
    header: bytes = b"",
    size_only_above: int | None = None,
) -> str:
    """sha256 (hex) of `header`, then of each file under `root` (all of them, sorted, unless
    `files` are given): its path relative to `root`, then its bytes, streamed. Files over
    `size_only_above` bytes count by size instead (a quick identity for large weights)."""
    root = Path(root)
    h = hashlib.sha256(header)
    chosen = sorted(p for p in root.rglob("*") if p.is_file()) if files is None else files
    for f in chosen:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        size = f.stat().st_size
        if size_only_above is not None and size > size_only_above:
            h.update(f"<{size} bytes>".encode())
            continue
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lora_r": 8}} -> {"train.lora_r": 8}; an empty mapping is a leaf of its own."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= dotted(value, f"{path}.")
        else:
            out[path] = value
    return out
