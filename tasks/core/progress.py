"""Progress a person can read: `<what> 16/50  elapsed 0:42  eta 1:29`, one line at a time."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def clock(seconds: float) -> str:
    """0:42, 12:05, or 1:02:05."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def reporter(what: str, stream=sys.stderr) -> Callable[[int, int], None]:
    """A progress(done, total) callback printing one line per call, with elapsed time and ETA."""
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        eta = elapsed / max(1, done) * (total - done)
        print(
            f"{what} {done}/{total}  elapsed {clock(elapsed)}  eta {clock(eta)}",
            file=stream,
            flush=True,
        )

    return progress
