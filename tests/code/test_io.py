"""Atomic outputs under a full disk: the write fails loudly and the previous output survives."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tasks.core.io import atomic_dir, write_json_atomic, write_text_atomic


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real ENOSPC, not a mock. Needs root and mount (CI and dev machines)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)])
    if done.returncode != 0:
        pytest.skip("mount -t tmpfs is not allowed here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_keeps_the_previous_json(tiny_disk):
    report = tiny_disk / "reports" / "metrics.json"
    write_json_atomic(report, {"ted_accuracy": 0.5})
    with pytest.raises(OSError) as err:
        write_json_atomic(report, {"blob": "x" * 200_000})
    assert err.value.errno == 28  # ENOSPC
    assert json.loads(report.read_text()) == {"ted_accuracy": 0.5}
    assert [p.name for p in report.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_a_full_disk_keeps_the_previous_directory(tiny_disk):
    out = tiny_disk / "artifacts" / "adapter"
    with atomic_dir(out) as tmp:
        (tmp / "adapter_config.json").write_text("{}")
    with pytest.raises(OSError) as err, atomic_dir(out) as tmp:
        (tmp / "adapter_config.json").write_text("{}")
        (tmp / "adapter_model.safetensors").write_bytes(b"\0" * 200_000)
    assert err.value.errno == 28
    assert [p.name for p in out.iterdir()] == ["adapter_config.json"]
    assert [p.name for p in out.parent.iterdir()] == ["adapter"]  # no temp dir left


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_atomic_outputs_get_the_mode_a_plain_mkdir_or_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "plain-dir").mkdir()
        (tmp_path / "plain-file").write_text("x")
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
        write_text_atomic(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)

    def mode(p):
        return p.stat().st_mode & 0o777

    assert mode(tmp_path / "out") == mode(tmp_path / "plain-dir") == 0o777 & ~umask
    assert mode(tmp_path / "report.json") == mode(tmp_path / "plain-file") == 0o666 & ~umask
