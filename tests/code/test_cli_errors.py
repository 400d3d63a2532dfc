"""Every command line answers a user's mistake with one line on stderr, naming what is wrong,
and exit code 2: never a traceback. Bad params reach every command through the one harness
(tasks.core.cli); each command also gets a bad input of its own kind."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, git_env

COMMANDS = [
    "tasks.refresh_data",
    "tasks.ingest",
    "tasks.validate",
    "tasks.build_base",
    "tasks.train",
    "tasks.evaluate",
    "tasks.champion",
    "tasks.gate",
    "tasks.merge",
    "tasks.register",
    "tasks.predict",
    "tasks.score",
    "tasks.promote",
    "tasks.lineage",
    "tasks.recipe",
    "tasks.summary",
    "tasks.serve",
    "tasks.reader.pretrain",
    "tasks.inference.ocr",
    "flows.retrain",
    "flows.score",
    "flows.deploy",
]
# what each command needs beside --params to get as far as reading them
REQUIRED = {
    "tasks.predict": ["receipt.png"],
    "tasks.score": ["--dir", "."],
    "tasks.lineage": ["show"],
    "tasks.recipe": ["configs/llava-1.5-7b.yaml", "--print"],
    "flows.score": ["--dir", "."],
}


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """`python -m module argv`, in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(argv)
    return int(exited.value.code or 0), capsys.readouterr().err


def one_line_exit_2(code: int, err: str, *named: str, expected: int = 2) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for part in named:
        assert part in lines[0], lines[0]


@pytest.mark.parametrize("module", COMMANDS)
def test_bad_params_are_one_line_naming_the_key(module, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["args"]["learning_rate"] = "fast"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    if module == "tasks.recipe":
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / "llava-1.5-7b.yaml").write_text("train: {lora_r: 8}\n")
    code, err = run_main(module, ["--params", "bad.yaml", *REQUIRED.get(module, [])], capsys)
    one_line_exit_2(code, err, "bad.yaml", "train.args.learning_rate")


@pytest.mark.parametrize("module", ["tasks.train", "flows.retrain"])
def test_a_missing_params_file_is_one_line(module, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(module, [], capsys)
    one_line_exit_2(code, err, "params.yaml")


def cases(tmp):
    """(module, argv, what the line names) for a bad input of each command's own kind."""
    (tmp / "notjson").mkdir()
    (tmp / "notjson" / "metadata.jsonl").write_text("nope\n")
    (tmp / "nogt" / "images").mkdir(parents=True)
    (tmp / "nogt" / "metadata.jsonl").write_text(json.dumps({"file_name": "images/a.png"}) + "\n")
    (tmp / "cordjson" / "train").mkdir(parents=True)
    (tmp / "cordjson" / "train" / "r1.json").write_text("{bad")
    (tmp / "notimage.png").write_text("not an image")
    (tmp / "recipe.yaml").write_text("train: {no_such_key: 1}\n")
    missing = str(tmp / "missing")
    P = ["--params", str(REPO / "params.yaml")]
    return [
        ("tasks.refresh_data", [*P, "--source", "nope", "--no-dvc"], ["'nope'"]),
        ("tasks.refresh_data", [*P, "--source", f"imagefolder:{missing}", "--no-dvc"], [missing]),
        (
            "tasks.refresh_data",
            [*P, "--source", f"imagefolder:{tmp}/notjson", "--no-dvc"],
            ["metadata.jsonl:1", "not JSON"],
        ),
        (
            "tasks.refresh_data",
            [*P, "--source", f"imagefolder:{tmp}/nogt", "--no-dvc"],
            ["metadata.jsonl:1", "ground_truth"],
        ),
        (
            "tasks.refresh_data",
            [*P, "--source", f"cord-json:{tmp}/cordjson", "--no-dvc"],
            ["'cord-train-r1'"],
        ),
        ("tasks.refresh_data", [*P, "--source", "hf:no/such", "--no-dvc"], ["hf:no/such"]),
        ("tasks.ingest", [*P, "--data", missing], [missing]),
        ("tasks.validate", [*P, "--dataset", missing], [missing]),
        ("tasks.build_base", [*P, "--dataset", missing], [missing]),
        ("tasks.train", [*P, "--dataset", missing, "--base", missing], [missing]),
        ("tasks.evaluate", [*P, "--dataset", missing], [missing]),
        ("tasks.gate", [*P, "--metrics", missing], [missing]),
        ("tasks.merge", [*P, "--adapter", missing], [missing]),
        ("tasks.register", [*P, "--repo", str(tmp), "--merged", missing], [missing]),
        (
            "tasks.predict",
            [*P, "--model", str(REPO / "models" / "tiny-reader"), str(tmp / "notimage.png")],
            ["notimage.png", "not a readable image"],
        ),
        ("tasks.predict", [*P, "--model", missing, str(tmp / "notimage.png")], [missing]),
        (
            "tasks.predict",
            [*P, "--model", "models:/nope@champion", str(REPO / "docs" / "example.jpg")],
            ["models:/nope@champion"],
        ),
        ("tasks.score", [*P, "--dir", missing], [missing]),
        (
            "tasks.score",
            [*P, "--dir", str(tmp), "--repo", str(tmp)],
            ["no version with alias 'champion'"],
        ),
        ("tasks.promote", [*P, "--repo", str(tmp), "--version", "7"], ["no version '7'"]),
        ("tasks.promote", [*P, "--repo", str(tmp), "--rollback", "7"], ["no version '7'"]),
        ("tasks.lineage", [*P, "show", "--repo", str(tmp)], ["champion"]),
        (
            "tasks.lineage",
            [*P, "restore", "--version", "3", "--repo", str(tmp)],
            ["no version '3'"],
        ),
        ("tasks.recipe", [*P, str(tmp / "recipe.yaml"), "--print"], ["no_such_key"]),
        ("tasks.recipe", [*P, missing, "--print"], [missing]),
        ("tasks.inference.ocr", [*P, "--data", missing], [missing]),
        ("tasks.summary", [*P, "--metrics", missing], [missing]),
        ("tasks.serve", [*P, "--model", "models:/nope@champion"], ["models:/nope@champion"]),
        ("flows.retrain", [*P, "--source", "nope:x"], ["'nope:x'"]),
        ("flows.score", [*P, "--dir", missing], [missing]),
        ("flows.deploy", [*P, "--cron", "every day"], ["every day"]),
    ]


@pytest.mark.parametrize("n", range(31))
def test_a_bad_input_is_one_line_naming_it(n, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    module, argv, named = cases(tmp_path)[n]
    code, err = run_main(module, argv, capsys)
    # predict reads what it can: an unreadable file is its own line and exit 1, not a usage error
    failed_file = module == "tasks.predict" and named[-1] == "not a readable image"
    one_line_exit_2(code, err, *named, expected=1 if failed_file else 2)


def test_every_case_is_run():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        listed = cases(Path(tmp))
    assert len(listed) == 31
    assert {m for m, _, _ in listed} >= set(COMMANDS) - {"tasks.champion", "tasks.reader.pretrain"}


def test_make_data_on_a_bad_source_is_one_line_from_a_fresh_process(tmp_path):
    """The same through `python -m` (what make and dvc run): stderr holds the line alone."""
    done = subprocess.run(
        [sys.executable, "-m", "tasks.refresh_data", "--source", "imagefolder:/nowhere"],
        cwd=REPO,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("data: ")
