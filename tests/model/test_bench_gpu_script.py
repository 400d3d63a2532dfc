"""The GPU benchmark script runs its whole comparison at tiny size on CPU, so it cannot rot."""

import json

from bench.gpu_qlora import llava_7b_config, main


def test_gpu_benchmark_runs_every_comparison_at_tiny_size(tmp_path):
    out = tmp_path / "rows.json"
    main(["--tiny", "--steps", "1", "--batches", "1,2", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    seen = {(r["quant"], r["attn"], r["ckpt"], r["batch"], r["padding"]) for r in rows}
    assert {
        ("nf4", "sdpa", True, 1, "longest"),
        ("nf4", "sdpa", True, 2, "longest"),
        ("nf4", "eager", True, 2, "longest"),
        ("nf4", "sdpa", False, 2, "longest"),
        ("nf4", "sdpa", True, 2, "fixed"),
        ("none", "sdpa", True, 1, "longest"),
    } <= seen
    assert all(r["samples_s"] > 0 and r["tokens_s"] > 0 for r in rows)
    fixed = next(r for r in rows if r["padding"] == "fixed")
    longest = next(
        r for r in rows if r["padding"] == "longest" and r["batch"] == 2 and r["quant"] == "nf4"
    )
    assert fixed["seq"] >= longest["seq"]


def test_7b_config_has_llava_1_5_shapes():
    cfg = llava_7b_config(400)
    v, t = cfg.vision_config, cfg.text_config
    assert (
        (v.image_size // v.patch_size) ** 2 == 576
        and v.hidden_size == 1024
        and v.num_hidden_layers == 24
    )
    assert (t.hidden_size, t.num_hidden_layers, t.intermediate_size, t.vocab_size) == (
        4096,
        32,
        11008,
        32064,
    )


def test_gpu_smoke_runs_the_7b_recipe_on_a_replica_at_tiny_size(tmp_path):
    """bench/gpu_smoke.py with --dims tiny: the replica, the 7B recipe's QLoRA (no
    modules_to_save, attention-only LoRA), 576 image tokens; on a GPU the same with 7B sizes."""
    import pytest

    from bench.gpu_smoke import HUB_FILES
    from bench.gpu_smoke import main as smoke

    if not HUB_FILES.is_dir():
        pytest.skip(f"{HUB_FILES} absent (the genuine hub files live beside the repo)")
    out = tmp_path / "smoke.json"
    result = smoke(["--dims", "tiny", "--steps", "1", "--records", "4", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["image_tokens"] == 576
    assert result["train"]["steps"] == 1 and result["train"]["quantization"] == "nf4"
    assert result["params"]["train"]["modules_to_save"] == []
    assert set(result["seconds"]) == {"replica", "data", "ingest", "base", "train", "evaluate"}
