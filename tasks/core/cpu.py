"""How many cores this process's own pools (OCR, rendering) may use."""

from __future__ import annotations

import os


def cores() -> int:
    """OMP_NUM_THREADS where set (as test workers set it), else every core this process has."""
    return int(os.environ.get("OMP_NUM_THREADS", "0")) or len(os.sched_getaffinity(0))
