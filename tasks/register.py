"""Register stage: log the run to MLflow and create a new version of the registered model.

Logs params, metrics, the loss curve, the validation report, a sample of predictions
and the dataset (with its DVC md5), then logs the serving pyfunc (tasks/inference/serving.py) and
registers it. The version is tagged with its lineage (git commit + dirty flag, data.dvc
md5, each stage's dvc.lock hash, params digest) and its metrics, and gets the alias
`challenger`. Writes reports/registration.json.

Versions are registered by content: `model_digest` hashes what the pyfunc carries (the
merged model, or the adapter plus its pinned base; the source of the code it runs) and the
config it serves with. When a version with that digest exists, no new version is made: the
existing one is re-tagged with this run's lineage, metrics and gate, gets the alias, and the
report says `"reused": true`.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.digest import dotted, tree_digest
from tasks.core.errors import MissingInput
from tasks.core.io import read_json, write_json_atomic
from tasks.inference.generation import Settings
from tasks.registry import lineage

CODE = Path(__file__).parent  # the tasks package, carried by the pyfunc
SERVING = CODE / "inference" / "serving.py"
# What a serving environment installs (explicit: MLflow's inference would reload the model).
PIP_REQUIREMENTS = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "peft==0.21.2",
    "tokenizers>=0.22",
    "pillow>=10.1",
    "pandas",
    "mlflow==3.17.2",
    "outlines==1.3.3",  # json_schema: constrained decoding (tasks.inference.constrained)
    "llguidance==1.9.1",
    "rapidocr==3.10.0",  # ocr_prompt: OCR grounding (tasks.inference.ocr), models inside the wheel
    "onnxruntime==1.32.0",
]


def _signature(json_schema: bool):
    """Image bytes in; JSON text, validity, raw text, confidence and warnings out. One request param:
    `json_schema` (constrained decoding), defaulting to what the version was evaluated with."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema(
            [
                ColSpec("string", "json"),
                ColSpec("boolean", "valid_json"),
                ColSpec("string", "raw"),
                ColSpec("string", "confidence"),
                ColSpec("string", "warnings"),
            ]
        ),
        params=ParamSchema([ParamSpec("json_schema", "boolean", json_schema)]),
    )


def model_digest(carried: str | Path, config: dict[str, Any], code: Path = CODE) -> str:
    """sha256 of every file of the model the pyfunc carries (relative path and bytes), its
    serving config and the source of the code it carries (`code`'s .py files): the same weights
    served by other code are another version."""
    source = tree_digest(code, sorted(code.rglob("*.py")))
    return tree_digest(
        carried, header=json.dumps(config, sort_keys=True).encode() + source.encode()
    )


def weights_digest(carried: str | Path, config: dict[str, Any]) -> str:
    """sha256 of the model files the pyfunc carries and, for an adapter, the base it merges
    onto: the same for two versions that serve the same weights with other code or settings
    (`tasks.promote` lets such a version replace the champion without beating it)."""
    pin = {k: config[k] for k in ("base", "revision") if k in config}
    return tree_digest(carried, header=json.dumps(pin, sort_keys=True).encode())


def version_with_digest(client, name: str, digest: str):
    """The registered version of `name` tagged with this model digest, or None."""
    found = client.search_model_versions(f"name = '{name}' and tags.model_digest = '{digest}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


def run_register(
    params: Params,
    repo: str | Path,
    merged_dir: str | Path,
    adapter_dir: str | Path,
    reports: str | Path,
    out_path: str | Path,
) -> dict[str, Any]:
    """Register the gated model (or re-tag the version with the same model digest), tag it with
    its lineage, metrics and gate, and point the `challenger` alias at it."""
    from tasks.registry.tracking import setup

    repo, reports = Path(repo), Path(reports)
    r = params.register_
    artifact, artifacts, config = _what_to_log(params, merged_dir, adapter_dir)
    # the low-confidence threshold evaluate picked on validation answers travels with the model
    config["min_confidence"] = read_json(reports / "metrics.json").get("confidence_threshold")
    client = setup(r.experiment, repo)
    tags = lineage.collect(repo, params.digest(), params.paths.data)
    digest = model_digest(next(iter(artifacts.values())), config)
    existing = version_with_digest(client, r.model_name, digest)
    if existing is not None:
        version, run_id = str(existing.version), existing.run_id
    else:
        version, run_id = _log_new_version(params, repo, reports, tags, artifacts, config)
    gate = json.loads((reports / "gate.json").read_text())
    version_tags = tags | _version_tags(params, repo, reports, gate, artifact, digest)
    version_tags["weights_digest"] = weights_digest(next(iter(artifacts.values())), config)
    for k, v in version_tags.items():
        client.set_model_version_tag(r.model_name, version, k, v)
    client.set_registered_model_alias(r.model_name, "challenger", version)
    result = {
        "name": r.model_name,
        "version": version,
        "reused": existing is not None,
        "model_digest": digest,
        "run_id": run_id,
        "model_uri": f"models:/{r.model_name}/{version}",
        "tags": version_tags,
    }
    write_json_atomic(out_path, result)
    return result


def _what_to_log(params: Params, merged_dir, adapter_dir) -> tuple[str, dict[str, str], dict]:
    """The pyfunc's artifact (the merged model, or the adapter plus a pinned hub base) and its
    config: the settings this model was evaluated with."""
    r = params.register_
    tiny = params.model.base == "tiny"
    artifact = r.artifact if r.artifact != "auto" else ("merged" if tiny else "adapter")
    config: dict[str, Any] = Settings.from_params(params).as_config()
    carried = Path(merged_dir if artifact == "merged" else adapter_dir)
    if not (carried / "config.json").is_file() and not (carried / "adapter_config.json").is_file():
        raise MissingInput(f"{carried}: no {artifact} model here (the {artifact} stage writes it)")
    if artifact == "merged":
        return artifact, {"model": str(Path(merged_dir).resolve())}, config
    config |= {"base": params.model.base, "revision": params.model.revision or "main"}
    return artifact, {"adapter": str(Path(adapter_dir).resolve())}, config


TRAIN_METRICS = ("train_seconds", "samples_per_second", "final_loss", "peak_rss_mb", "processes")
REPORTS_LOGGED = ("validation.json", "gate.json", "train.json", "fields.json", "review.html")


def _log_new_version(params, repo: Path, reports: Path, tags, artifacts, config) -> tuple[str, str]:
    """One MLflow run (params, metrics, the loss curve, reports, the dataset, the pyfunc)
    that registers a new version; (version, run id)."""
    import mlflow

    metrics = json.loads((reports / "metrics.json").read_text())
    train = json.loads((reports / "train.json").read_text())
    name = f"retrain-{tags['git_commit'][:8]}-{tags['data_md5'][:8]}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags(tags)
        flat = dotted(params.model_dump(mode="json", by_alias=True))
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        mlflow.log_metrics(
            {
                f"train_{k}": float(train[k])
                for k in TRAIN_METRICS
                if isinstance(train.get(k), int | float)
            }
        )
        with (reports / "train_loss.csv").open() as f:
            for row in csv.DictReader(f):
                mlflow.log_metric("train_loss", float(row["loss"]), step=int(row["step"]))
        _log_reports(reports)
        _log_dataset(params, repo, tags)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING),
            artifacts=artifacts,
            model_config=config,
            code_paths=[str(CODE)],
            pip_requirements=PIP_REQUIREMENTS,
            signature=_signature(bool(config["json_schema"])),
            registered_model_name=params.register_.model_name,
        )
    return str(info.registered_model_version), run.info.run_id


def _log_reports(reports: Path) -> None:
    import mlflow

    for name in REPORTS_LOGGED:
        if (reports / name).exists():
            mlflow.log_artifact(str(reports / name), artifact_path="reports")
    predictions = reports / "predictions.jsonl"
    if predictions.exists():
        sample = "".join(predictions.read_text().splitlines(keepends=True)[:20])
        mlflow.log_text(sample, "reports/predictions_sample.jsonl")


def _log_dataset(params: Params, repo: Path, lineage_tags: dict[str, str]) -> None:
    """The data snapshot as the run's training input, by its DVC md5."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    dataset = MetaDataset(  # type: ignore[abstract]
        resolve_dataset_source((repo / params.paths.data).resolve().as_uri()),
        name="receipts",
        digest=lineage_tags["data_md5"][:36],
    )
    tags = {"dvc_md5": lineage_tags["data_md5"], "source": lineage_tags["data_source"]}
    mlflow.log_input(dataset, context="training", tags=tags)


def _version_tags(params, repo: Path, reports: Path, gate, artifact, digest) -> dict[str, str]:
    """Metrics, the gate's verdict (and the champion it compared against), the artifact kind,
    the model digest, and where the model was trained and registered."""
    metrics = json.loads((reports / "metrics.json").read_text())
    train = json.loads((reports / "train.json").read_text())
    tags = {f"metric.{k}": str(v) for k, v in metrics.items()} | {
        "gate_passed": str(gate["passed"]).lower(),
        "artifact": artifact,
        "model_digest": digest,
        "primary_metric": params.gate.primary_metric,
        # where it was trained (a GPU host: docs/scaling-out.md) and registered
        "trained_on.host": str(train.get("host", "unknown")),
        "trained_on.workdir": str(train.get("workdir", "unknown")),
        "trained_on.device": str(train.get("device_name", "unknown")),
        "registered_on.host": socket.gethostname(),
        "registered_on.workdir": str(repo.resolve()),
    }
    if gate.get("champion"):
        champion = gate["champion"]
        tags |= {"gate.champion_version": str(champion["version"])} | {
            f"gate.champion.{k}": str(v) for k, v in champion.items() if k != "version"
        }
    return tags


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Register the gated model in MLflow's model registry.",
        paths=("merged", "adapter", "reports", "registration"),
    )
    ap.add_argument("--repo", default=".")

    def body(a, p) -> str:
        res = run_register(p, a.repo, a.merged, a.adapter, a.reports, a.registration)
        how = "same weights as an existing version: re-tagged" if res["reused"] else "new version"
        return (
            f"register: {res['name']} v{res['version']} ({how}; alias challenger), "
            f"run {res['run_id']}"
        )

    cli.run("register", ap, body, argv)


if __name__ == "__main__":
    main()
