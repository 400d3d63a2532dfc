"""The core count that OCR's and rendering's thread pools are sized by."""

import os

from tasks.core.cpu import cores


def test_pools_take_omp_num_threads_where_set_else_every_core_of_the_process(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # as each test worker sets it
    assert cores() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cores() == len(os.sched_getaffinity(0))
