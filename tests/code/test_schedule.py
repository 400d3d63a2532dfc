"""The learning-rate schedule the train stage hands to Trainer."""

import torch
from transformers import get_scheduler

from tasks.train import _scheduler_kwargs, total_steps
from tests.conftest import small_params, updated


def test_total_steps_counts_as_trainer_does():
    args = {"num_train_epochs": 8, "per_device_train_batch_size": 8}
    t = updated(small_params(), train={"args": args | {"max_steps": -1}}).train
    assert total_steps(t, 1200) == 1200
    assert total_steps(t, 1201) == 8 * 151  # a last, short batch is a step
    accumulated = {"max_steps": -1, "gradient_accumulation_steps": 2}
    assert (
        total_steps(updated(small_params(), train={"args": args | accumulated}).train, 1200) == 600
    )
    assert total_steps(updated(small_params(), train={"args": {"max_steps": 7}}).train, 1200) == 7


def test_warmup_stable_decay_holds_the_rate_then_decays_over_the_last_fraction():
    args = {"max_steps": 100, "lr_scheduler_type": "warmup_stable_decay", "warmup_steps": 0}
    t = updated(small_params(), train={"decay_fraction": 0.2, "args": args}).train
    kwargs = _scheduler_kwargs(t, records=1000, world=1)
    assert kwargs == {"num_decay_steps": 20}
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(
        t.args.lr_scheduler_type,
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
    cosine = updated(small_params(), train={"args": {"lr_scheduler_type": "cosine"}}).train
    assert _scheduler_kwargs(cosine, 1000, 1) == {}
