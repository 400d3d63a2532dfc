"""QLoRA training behaviour on the tiny model: masks, 4-bit modules, what trains, resume."""

import pytest
import torch
from transformers import TrainerCallback

from tasks.data.dataset import load_dataset_dir
from tasks.model.averaging import SNAPSHOTS
from tasks.model.collator import ReceiptCollator, TargetTooLong, max_length_for
from tasks.model.modeling import IMAGE_TOKEN, load_model, load_processor, prompt_text
from tasks.train import run_train
from tests.conftest import updated


@pytest.fixture(scope="module")
def processor(base_dir):
    return load_processor(str(base_dir))


def test_collator_masks_prompt_pad_and_image_tokens(params, dataset_dir, processor):
    train = load_dataset_dir(dataset_dir)["train"]
    records = [train[0], train[1]]
    max_len = max_length_for(processor, params.ingest.prompt, list(train["target"]))
    batch = ReceiptCollator(processor, params.ingest.prompt, max_len)(records)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    n_prompt = len(
        processor(images=records[0]["image"], text=prompt_text(processor, params.ingest.prompt))[
            "input_ids"
        ][0]
    )
    for i, rec in enumerate(records):
        target_ids = tok(rec["target"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        assert (labels[:n_prompt] == -100).all()  # the prompt is masked
        assert labels[n_prompt : n_prompt + len(target_ids)].tolist() == target_ids
        assert (labels[n_prompt + len(target_ids) :] == -100).all()  # padding is masked
        assert (ids[n_prompt + len(target_ids) :] == tok.pad_token_id).all()
        assert (labels[ids == image_id] == -100).all() and (ids == image_id).sum() > 0
    assert batch["pixel_values"].shape[0] == 2


def test_a_batch_padded_to_a_multiple_is_the_same_batch_with_masked_columns(
    params, dataset_dir, processor
):
    train = load_dataset_dir(dataset_dir)["train"]
    records = [train[0], train[1]]
    max_len = max_length_for(processor, params.ingest.prompt, list(train["target"]))
    tight = ReceiptCollator(processor, params.ingest.prompt, max_len)(records)
    wide = ReceiptCollator(processor, params.ingest.prompt, max_len, pad_to_multiple_of=64)(records)
    width = tight["input_ids"].shape[1]
    assert wide["input_ids"].shape[1] == -(-width // 64) * 64  # the next multiple of 64
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(wide[key][:, :width], tight[key])
    assert (wide["attention_mask"][:, width:] == 0).all() and (
        wide["labels"][:, width:] == -100
    ).all()
    assert torch.equal(wide["pixel_values"], tight["pixel_values"])


def test_training_batches_leave_out_the_mask_with_the_same_loss_and_gradients(
    params, dataset_dir, processor, base_dir
):
    import dataclasses

    from tasks.train import receipt_collator

    train = load_dataset_dir(dataset_dir)["train"]
    records = [train[i] for i in range(4)]
    stage = receipt_collator(params, processor, train)
    batch = stage(records)
    assert "attention_mask" not in batch  # the train stage's batches
    masked = dataclasses.replace(stage, attention_mask=True)(records)  # the same, with its mask
    assert torch.equal(masked["input_ids"], batch["input_ids"])
    lengths = masked["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # rows of different lengths: there are pads to mask
    model = load_model(str(base_dir), quantization="none")
    model.train()

    def loss_and_grads(inputs):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    loss, grads = loss_and_grads(batch)
    loss_masked, grads_masked = loss_and_grads(masked)
    assert torch.allclose(loss, loss_masked, rtol=1e-5)
    assert len(grads) == len(grads_masked) > 0
    assert all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, grads_masked, strict=True)
    )


def test_overlong_target_is_rejected_not_truncated(params, dataset_dir, processor):
    record = dict(load_dataset_dir(dataset_dir)["train"][0])
    record["target"] = record["target"] * 20
    with pytest.raises(TargetTooLong, match=f"record '{record['id']}': field target is"):
        ReceiptCollator(processor, params.ingest.prompt, max_length=200)([record])


def test_4bit_quantises_the_language_model_only(base_dir):
    import bitsandbytes as bnb

    model = load_model(str(base_dir), quantization="nf4")
    four_bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all(".language_model." in n for n in four_bit)
    assert not any(
        "vision_tower" in n or "multi_modal_projector" in n or "lm_head" in n for n in four_bit
    )


def test_qlora_trains_the_adapter(trained):
    from safetensors.torch import load_file

    summary = trained["summary"]
    assert (
        summary["quantization"] == "nf4"
        and summary["steps"] == 6
        and summary["attn_implementation"] == "sdpa"
    )
    assert summary["loss_curve"][-1]["loss"] < summary["loss_curve"][0]["loss"]
    adapter = load_file(trained["adapter"] / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: it trained
    assert not any("vision_tower" in k for k in adapter)


def test_frozen_base_weights_do_not_move_during_training(params, dataset_dir, base_dir, tmp_path):
    from transformers import TrainerCallback

    snapshots = {}

    class Snap(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            snapshots["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}

        def on_train_end(self, args, state, control, model=None, **kw):
            snapshots["after"] = {n: p.detach().clone() for n, p in model.named_parameters()}

    run_train(
        params,
        dataset_dir,
        base_dir,
        tmp_path / "a",
        tmp_path / "c",
        tmp_path / "s.json",
        callbacks=[Snap()],
    )
    before, after = snapshots["before"], snapshots["after"]
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n or "modules_to_save" in n for n in changed)
    assert any("lora_" in n for n in changed)
    frozen_vision = [n for n in before if "vision_tower" in n]
    assert frozen_vision and not (changed & set(frozen_vision))


def test_resume_from_checkpoint_after_an_interrupted_run(params, dataset_dir, base_dir, tmp_path):
    ckpt = crashed_at(4, params, dataset_dir, base_dir, tmp_path)
    assert (ckpt / "checkpoint-3").is_dir() and not (
        tmp_path / "a"
    ).exists()  # no half-written adapter
    summary = run_train(params, dataset_dir, base_dir, tmp_path / "a", ckpt, tmp_path / "s.json")
    assert summary["resumed_from"].endswith("checkpoint-3")
    assert summary["steps"] == 6
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert not list(ckpt.glob("checkpoint-*"))


def test_checkpoints_from_other_params_are_not_resumed(params, dataset_dir, base_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_train(params, dataset_dir, base_dir, tmp_path / "a", ckpt, tmp_path / "s.json")
    assert not list(ckpt.glob("checkpoint-*"))  # a finished run leaves nothing to resume
    (ckpt / "checkpoint-3").mkdir()  # as if a crashed run of *other* params had left one
    other = updated(params, train={"args": {"learning_rate": 1e-3}})
    summary = run_train(other, dataset_dir, base_dir, tmp_path / "b", ckpt, tmp_path / "s2.json")
    assert summary["resumed_from"] is None and summary["steps"] == 6


def test_a_rerun_of_the_same_params_trains_the_same_adapter(
    params, dataset_dir, base_dir, trained, tmp_path
):
    """train.seed decides the run: peft's adapter init included, whatever torch's global
    generator held before (unseeded, two runs on identical inputs can end far apart)."""
    from safetensors.torch import load_file

    def adapter(d):
        return load_file(d / "adapter_model.safetensors")

    torch.manual_seed(12345)  # the global generator is not where `trained` left it
    run_train(params, dataset_dir, base_dir, tmp_path / "a", tmp_path / "c", tmp_path / "s.json")
    first, again = adapter(trained["adapter"]), adapter(tmp_path / "a")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)

    other = updated(params, train={"args": {"seed": 1, "data_seed": 1}})
    run_train(other, dataset_dir, base_dir, tmp_path / "b", tmp_path / "c", tmp_path / "s2.json")
    reseeded = adapter(tmp_path / "b")
    assert any(not torch.equal(first[k], reseeded[k]) for k in first)


class EpochEnds(TrainerCallback):
    """Records the adapter weights at every epoch's end, by global step."""

    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, args, state, control, model=None, **kw):
        from peft import get_peft_model_state_dict

        self.weights[state.global_step] = {
            k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
        }


def crashed_at(step, p, dataset_dir, base_dir, tmp_path):
    """Train `p` into tmp_path/a until a crash at the end of `step`; its checkpoint folder."""
    ckpt = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(
            p,
            dataset_dir,
            base_dir,
            tmp_path / "a",
            ckpt,
            tmp_path / "s.json",
            callbacks=[CrashAt(step)],
        )
    return ckpt


class CrashAt(TrainerCallback):
    """Raises at the end of global step `step`, as a crash would stop the run there."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


def averaging(params):
    """Params for 3 epochs (3 steps each), averaging the last 2."""
    return updated(
        params,
        train={"average_last": 2, "args": {"max_steps": -1, "num_train_epochs": 3}},
    )


def test_the_adapter_is_the_mean_of_the_last_epochs_weights(
    params, dataset_dir, base_dir, tmp_path
):
    from safetensors.torch import load_file

    ends = EpochEnds()
    p = averaging(params)
    summary = run_train(
        p,
        dataset_dir,
        base_dir,
        tmp_path / "a",
        tmp_path / "c",
        tmp_path / "s.json",
        callbacks=[ends],
    )
    steps = sorted(ends.weights)
    assert len(steps) == 3 and summary["averaged_steps"] == steps[-2:]
    adapter = load_file(tmp_path / "a" / "adapter_model.safetensors")
    last, before = ends.weights[steps[-1]], ends.weights[steps[-2]]
    assert adapter.keys() == last.keys()
    for k in adapter:
        assert torch.allclose(adapter[k], (last[k] + before[k]) / 2, atol=1e-7)
    assert any(not torch.equal(adapter[k], last[k]) for k in adapter)  # not the last step's
    assert not list((tmp_path / "c").glob("checkpoint-*"))


def test_a_resumed_run_averages_the_same_epochs_as_one_that_never_stopped(
    params, dataset_dir, base_dir, tmp_path
):
    """The epochs' weights travel in the checkpoint: a crash in epoch 3, then a rerun
    (resumed from epoch 2's end), writes the adapter a run without the crash writes."""
    from safetensors.torch import load_file

    p = averaging(params)
    whole = run_train(
        p, dataset_dir, base_dir, tmp_path / "w", tmp_path / "wc", tmp_path / "w.json"
    )
    ckpt = crashed_at(7, p, dataset_dir, base_dir, tmp_path)
    kept = sorted(f.name for f in (ckpt / "checkpoint-6" / SNAPSHOTS).iterdir())
    assert kept == ["step-3.safetensors", "step-6.safetensors"]
    resumed = run_train(p, dataset_dir, base_dir, tmp_path / "a", ckpt, tmp_path / "s.json")
    assert resumed["resumed_from"].endswith("checkpoint-6") and resumed["steps_this_run"] == 3
    assert resumed["averaged_steps"] == whole["averaged_steps"] == [6, 9]
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "w" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_without_its_epochs_weights_resumes_with_a_warning(
    params, dataset_dir, base_dir, tmp_path, caplog
):
    """A run stopped between writing a checkpoint and its epochs' weights: the rerun resumes,
    says so, and averages only the epochs that end after it."""
    import shutil

    p = averaging(params)
    ckpt = crashed_at(7, p, dataset_dir, base_dir, tmp_path)
    shutil.rmtree(ckpt / "checkpoint-6" / SNAPSHOTS)
    with caplog.at_level("WARNING", logger="tasks.model.averaging"):
        resumed = run_train(p, dataset_dir, base_dir, tmp_path / "a", ckpt, tmp_path / "s.json")
    assert resumed["resumed_from"].endswith("checkpoint-6") and resumed["averaged_steps"] == [9]
    assert "carries no epochs' weights" in caplog.text
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()


def test_with_no_epochs_weights_kept_the_adapter_stays_the_last_steps(tmp_path, caplog):
    """Resumed at the last step from a checkpoint without the epochs' weights, no epoch ends
    again: nothing to average, so the model is left as it is, with a warning."""
    from tasks.model.averaging import EpochAverage

    average = EpochAverage(3, resume=tmp_path / "checkpoint-9")
    with caplog.at_level("WARNING", logger="tasks.model.averaging"):
        assert average.apply(model=None) is None  # the model is not touched
    assert "carries no epochs' weights" in caplog.text and "the last step's" in caplog.text
