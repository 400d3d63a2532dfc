"""bench/train_curve.py's pieces that need no training: the checkpoint mean, the per-epoch
losses, the seeded train draw and the training arguments of a curve."""

import json

import datasets
import torch
from safetensors.torch import load_file, save_file

from bench.train_curve import (
    average_adapter,
    curve_args,
    epoch_checkpoints,
    epoch_losses,
    train_subset,
)
from tasks.core.config import load_params
from tests.conftest import REPO


def _checkpoint(root, step, value):
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.full((2, 3), float(value))}, str(ckpt / "adapter_model.safetensors"))
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 4, "step": step}))
    return ckpt


def test_the_average_adapter_holds_the_mean_weights_and_the_last_config(tmp_path):
    ckpts = [_checkpoint(tmp_path / "run", s, v) for s, v in ((10, 1.0), (20, 2.0), (30, 6.0))]
    assert epoch_checkpoints(tmp_path / "run") == ckpts  # by step, not by name (10 < 20 < 30)

    avg = average_adapter(ckpts[1:], tmp_path / "avg")

    assert torch.equal(
        load_file(str(avg / "adapter_model.safetensors"))["w"], torch.full((2, 3), 4.0)
    )
    assert json.loads((avg / "adapter_config.json").read_text())["step"] == 30


def test_epoch_losses_average_the_logged_losses_of_each_epoch(tmp_path):
    state = {
        "log_history": [
            {"step": 2, "loss": 3.0},
            {"step": 4, "loss": 1.0},  # the last step of epoch 1 (4 steps per epoch)
            {"step": 6, "loss": 0.5},
            {"step": 8, "loss": 0.25, "eval_loss": 9.0},
            {"step": 8, "train_runtime": 1.0},  # the closing summary has no loss
        ]
    }
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    assert epoch_losses(tmp_path, 4) == {1: 2.0, 2: 0.375}


def test_a_train_fraction_is_a_seeded_draw_of_train_alone(tmp_path):
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"id": [f"t{i}" for i in range(10)]}),
            "validation": datasets.Dataset.from_dict({"id": ["v0", "v1"]}),
        }
    )
    ds.save_to_disk(str(tmp_path / "full"))
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "full").rglob("*"))

    assert train_subset(tmp_path / "full", 1.0, 0, tmp_path / "same") == tmp_path / "full"
    half = datasets.load_from_disk(str(train_subset(tmp_path / "full", 0.5, 3, tmp_path / "a")))
    again = datasets.load_from_disk(str(train_subset(tmp_path / "full", 0.5, 3, tmp_path / "b")))
    assert len(half["train"]) == 5 and half["train"]["id"] == again["train"]["id"]
    assert set(half["train"]["id"]) < {f"t{i}" for i in range(10)}
    assert half["validation"]["id"] == ["v0", "v1"]
    # the draw writes nothing beside the source (a DVC output in the pipeline)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "full").rglob("*")) == files


def test_curve_args_save_every_epoch_and_change_only_the_epochs_asked():
    recipe = load_params(REPO / "params.yaml").train.args

    same = curve_args(recipe, seed=2)
    shorter = curve_args(recipe, seed=2, epochs=3)

    assert same.num_train_epochs == recipe.num_train_epochs and shorter.num_train_epochs == 3
    for args in (same, shorter):
        assert (args.seed, args.data_seed, args.save_total_limit) == (2, 2, 0)
        assert args.save_steps > 10**6  # saved by EpochSaves at each epoch's end instead
        assert args.learning_rate == recipe.learning_rate
        assert args.lr_scheduler_type == recipe.lr_scheduler_type
