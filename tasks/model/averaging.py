"""Checkpoint averaging: the adapter a train run writes is the mean of the LoRA weights at the
end of its last K epochs (`train.average_last`), not the last step's alone.

The adapter weights at every epoch's end are kept (the last K, on the CPU) and written into
each Trainer checkpoint under `epoch-adapters/`, so a run resumed from a checkpoint, on this
host or from the DVC remote, averages the same epochs as a run that never stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

from tasks.core.io import atomic_dir

log = logging.getLogger(__name__)

SNAPSHOTS = "epoch-adapters"


def mean_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every tensor the mean of its namesakes in `states` (the same keys and shapes)."""
    if not states:
        raise ValueError("no adapter weights to average")
    return {
        k: torch.stack([s[k].float() for s in states]).mean(dim=0).to(states[0][k].dtype)
        for k in states[0]
    }


class EpochAverage(TrainerCallback):
    """Keeps the adapter weights of the last `keep` epoch ends; `mean()` is their average.

    A checkpoint is written at every epoch's end (besides `save_steps`), holding the epochs'
    weights so far: resuming from it (`resume`, a checkpoint folder) restores them.
    """

    def __init__(self, keep: int, resume: str | Path | None = None):
        self.keep = keep
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}  # global step -> weights
        if resume:
            self._load(Path(resume) / SNAPSHOTS)

    def _load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        if not folder.is_dir():  # the run stopped between the checkpoint and its weights
            log.warning(
                "train: %s carries no epochs' weights: the adapter averages only the epochs "
                "that end from here on",
                folder.parent,
            )
            return
        for f in sorted(folder.glob("step-*.safetensors")):
            self.snapshots[int(f.stem.split("-")[1])] = load_file(str(f))
        self._trim()

    def _trim(self) -> None:
        for step in sorted(self.snapshots)[: -self.keep]:
            del self.snapshots[step]

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        from peft import get_peft_model_state_dict

        weights = get_peft_model_state_dict(model)
        self.snapshots[state.global_step] = {
            k: v.detach().cpu().clone() for k, v in weights.items()
        }
        self._trim()
        control.should_save = True  # a checkpoint that holds this epoch's weights
        return control

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from safetensors.torch import save_file

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / SNAPSHOTS
        with atomic_dir(folder) as tmp:  # whole or absent: never a half-written file to resume
            for step, weights in self.snapshots.items():
                save_file(weights, str(tmp / f"step-{step}.safetensors"))

    def steps(self) -> list[int]:
        """The global steps whose weights `mean()` averages, oldest first."""
        return sorted(self.snapshots)

    def mean(self) -> dict[str, torch.Tensor]:
        return mean_state([self.snapshots[s] for s in self.steps()])

    def apply(self, model) -> list[int] | None:
        """Load the mean of the kept epochs' weights into `model`'s adapter; the steps averaged.
        None, with the model as it is, when no epoch's weights were kept (a run resumed at its
        last step from a checkpoint without them)."""
        from peft import set_peft_model_state_dict

        steps = self.steps()
        if not steps:
            log.warning("train: no epoch's weights were kept: the adapter is the last step's")
            return None
        set_peft_model_state_dict(model, self.mean())
        log.info("train: adapter = mean of the weights at steps %s", steps)
        return steps
