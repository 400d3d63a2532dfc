"""The train stage's data-parallel path: 2 processes under torchrun, DDP over gloo, on CPU."""

import json
import subprocess
import sys

import pytest

from tasks.train import num_processes
from tests.conftest import git_env, small_params, write_params


def test_process_count_comes_from_params():
    auto = small_params().train.model_copy(update={"num_processes": "auto"})
    assert num_processes(auto.model_copy(update={"num_processes": 3})) == 3
    assert num_processes(auto) == 1  # "auto" on a machine without GPUs


@pytest.mark.slow
def test_two_process_ddp_training_shards_the_data(params, dataset_dir, base_dir, tmp_path):
    """`python -m tasks.train` (the DVC stage's command) relaunches itself under torchrun;
    each rank sees half of every global batch, and rank 0 alone writes the outputs."""
    from safetensors.torch import load_file

    p = params.model_copy(deep=True)
    args = p.train.args.model_copy(
        update={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 4}
    )
    p.train = p.train.model_copy(update={"num_processes": 2, "args": args})
    write_params(tmp_path, p)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "tasks.train", "--params", str(tmp_path / "params.yaml")]
        + ["--dataset", str(dataset_dir), "--base", str(base_dir)]
        + ["--adapter", str(out / "adapter"), "--checkpoints", str(out / "ckpt")]
        + ["--train-summary", str(out / "train.json"), "--train-loss", str(out / "loss.csv")],
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes (DDP) under torchrun" in done.stderr
    summary = json.loads((out / "train.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    # 12 train records, 4 per rank: 8 per global step -> 2 steps an epoch (one process: 3).
    n_train = summary["train_records"]
    assert n_train == 12
    assert summary["epochs"] == pytest.approx(2.0)
    # One adapter, written once (rank 0), and it trained.
    lora_b = [
        v
        for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items()
        if "lora_B" in k
    ]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert sorted(x.name for x in out.iterdir()) == ["adapter", "ckpt", "loss.csv", "train.json"]
    assert done.stdout.count("train: 4 steps") == 1  # rank 0 reports; rank 1 stays quiet
