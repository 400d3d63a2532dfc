"""The learning-rate schedule the train stage hands to Trainer."""

import torch
from transformers import get_scheduler

from tasks.train import _scheduler_kwargs, total_steps
from tests.conftest import small_params


def test_total_steps_counts_as_trainer_does():
    t = small_params().train.model_copy(
        update={"max_steps": -1, "epochs": 8, "batch_size": 8, "gradient_accumulation_steps": 1}
    )
    assert total_steps(t, 1200) == 1200
    assert total_steps(t, 1201) == 8 * 151  # a last, short batch is a step
    assert total_steps(t.model_copy(update={"gradient_accumulation_steps": 2}), 1200) == 600
    assert total_steps(t.model_copy(update={"max_steps": 7}), 1200) == 7


def test_warmup_stable_decay_holds_the_rate_then_decays_over_the_last_fraction():
    t = small_params().train.model_copy(
        update={
            "max_steps": 100,
            "lr_scheduler": "warmup_stable_decay",
            "decay_fraction": 0.2,
            "warmup_steps": 0,
        }
    )
    kwargs = _scheduler_kwargs(t, records=1000, world=1)
    assert kwargs == {"num_decay_steps": 20}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(
        t.lr_scheduler,
        opt,
        num_warmup_steps=0,
        num_training_steps=100,
        scheduler_specific_kwargs=kwargs,
    )
    rates = []
    for _ in range(100):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[:80] == [1.0] * 80
    assert all(a > b for a, b in zip(rates[80:], rates[81:], strict=False)) and rates[-1] < 0.05
    # cosine needs no extra arguments
    assert _scheduler_kwargs(t.model_copy(update={"lr_scheduler": "cosine"}), 1000, 1) == {}
