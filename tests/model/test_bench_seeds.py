"""bench/seeds.py trains the project's recipe per seed and keeps one row per seed."""

import json

from bench.seeds import main
from tests.conftest import write_params


def test_seed_rows_reproduce_the_pipeline_run_and_replace_their_own_seed(
    params, dataset_dir, base_dir, trained, tmp_path
):
    project = tmp_path / "project"
    (project / "artifacts").mkdir(parents=True)
    write_params(project, params)
    (project / "artifacts" / "dataset").symlink_to(dataset_dir)
    (project / "artifacts" / "base").symlink_to(base_dir)
    out = tmp_path / "seeds.json"

    main(
        ["--project", str(project), "--seeds", str(params.train.args.seed), "7", "--out", str(out)]
    )
    runs = json.loads(out.read_text())["runs"]
    assert [r["seed"] for r in runs] == sorted([params.train.args.seed, 7])
    same = next(r for r in runs if r["seed"] == params.train.args.seed)
    # the pipeline's own run at this seed (the `trained` fixture) trained the same model
    assert same["final_loss"] == trained["summary"]["final_loss"]
    assert same["steps"] == trained["summary"]["steps"]
    other = next(r for r in runs if r["seed"] == 7)
    assert other["final_loss"] != same["final_loss"]
    assert all(0 <= r["json_valid_rate"] <= 1 and r["n_test"] > 0 for r in runs)

    main(["--project", str(project), "--seeds", "7", "--out", str(out)])
    again = json.loads(out.read_text())["runs"]
    assert [r["seed"] for r in again] == [r["seed"] for r in runs]  # replaced, not appended
    assert next(r for r in again if r["seed"] == 7)["final_loss"] == other["final_loss"]
