"""Register stage: log the run to MLflow and create a new version of the registered model.

Logs params, metrics, the loss curve, the validation report, a sample of predictions
and the dataset (with its DVC md5), then logs the serving pyfunc (tasks/serving.py) and
registers it. The version is tagged with its lineage (git commit + dirty flag, data.dvc
md5, each stage's dvc.lock hash, params digest) and its metrics, and gets the alias
`challenger`. Writes reports/registration.json.

Versions are registered by content: `model_digest` hashes what the pyfunc carries (the
merged model, or the adapter plus its pinned base) and the config it serves with. When a
version with that digest exists, no new version is made: the existing one is re-tagged with
this run's lineage, metrics and gate, gets the alias, and the report says `"reused": true`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from tasks import lineage
from tasks.config import Params, load_params
from tasks.generation import Settings
from tasks.io import quiet_telemetry, write_json_atomic

SERVING = Path(__file__).with_name("serving.py")
# What a serving environment installs (explicit: MLflow's inference would reload the model).
PIP_REQUIREMENTS = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "peft==0.21.2",
    "tokenizers>=0.22",
    "pillow>=10.1",
    "pandas",
    "mlflow==3.17.2",
    "outlines==1.3.3",  # json_schema: constrained decoding (tasks.constrained)
    "llguidance==1.9.1",
    "rapidocr==3.10.0",  # ocr_prompt: OCR grounding (tasks.ocr), models inside the wheel
    "onnxruntime==1.32.0",
]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _flat(v, key + ".") if isinstance(v, dict) else {key: v}
    return out


def _signature(json_schema: bool):
    """Image bytes in; JSON text, validity, raw text and warnings out. One request param:
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
                ColSpec("string", "warnings"),
            ]
        ),
        params=ParamSchema([ParamSpec("json_schema", "boolean", json_schema)]),
    )


def model_digest(carried: str | Path, config: dict[str, Any]) -> str:
    """sha256 of every file the pyfunc carries (relative path and bytes) and its serving config."""
    root = Path(carried)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


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
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from tasks.tracking import setup

    repo, reports = Path(repo), Path(reports)
    r = params.register_
    client = setup(r.experiment, repo)
    tags = lineage.collect(repo, params.digest())
    metrics = json.loads((reports / "metrics.json").read_text())
    gate = json.loads((reports / "gate.json").read_text())
    train = json.loads((reports / "train.json").read_text())
    artifact = (
        r.artifact
        if r.artifact != "auto"
        else ("merged" if params.model.base == "tiny" else "adapter")
    )

    # The pyfunc answers with the settings this model was evaluated with.
    config: dict[str, Any] = Settings.from_params(params).as_config()
    if artifact == "merged":
        artifacts = {"model": str(Path(merged_dir).resolve())}
    else:
        artifacts = {"adapter": str(Path(adapter_dir).resolve())}
        config |= {"base": params.model.base, "revision": params.model.revision or "main"}
    digest = model_digest(next(iter(artifacts.values())), config)
    existing = version_with_digest(client, r.model_name, digest)
    if existing is not None:
        version, run_id = str(existing.version), existing.run_id
    else:
        with mlflow.start_run(
            run_name=f"retrain-{tags['git_commit'][:8]}-{tags['data_md5'][:8]}"
        ) as run:
            mlflow.set_tags(tags)
            mlflow.log_params(
                {
                    k: str(v)[:500]
                    for k, v in _flat(params.model_dump(mode="json", by_alias=True)).items()
                }
            )
            mlflow.log_metrics(
                {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            )
            mlflow.log_metrics(
                {
                    f"train_{k}": float(train[k])
                    for k in (
                        "train_seconds",
                        "samples_per_second",
                        "final_loss",
                        "peak_rss_mb",
                        "processes",
                    )
                    if isinstance(train.get(k), (int, float))
                }
            )
            with (reports / "train_loss.csv").open() as f:
                for row in csv.DictReader(f):
                    mlflow.log_metric("train_loss", float(row["loss"]), step=int(row["step"]))
            for name in (
                "validation.json",
                "gate.json",
                "train.json",
                "fields.json",
                "review.html",
            ):
                if (reports / name).exists():
                    mlflow.log_artifact(str(reports / name), artifact_path="reports")
            predictions = reports / "predictions.jsonl"
            if predictions.exists():
                sample = "".join(predictions.read_text().splitlines(keepends=True)[:20])
                mlflow.log_text(sample, "reports/predictions_sample.jsonl")
            dataset = MetaDataset(  # type: ignore[abstract]
                resolve_dataset_source((repo / "data").resolve().as_uri()),
                name="receipts",
                digest=tags["data_md5"][:36],
            )
            mlflow.log_input(
                dataset,
                context="training",
                tags={"dvc_md5": tags["data_md5"], "source": params.data.source},
            )
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(SERVING),
                artifacts=artifacts,
                model_config=config,
                code_paths=[str(Path(__file__).parent)],
                pip_requirements=PIP_REQUIREMENTS,
                signature=_signature(bool(config["json_schema"])),
                registered_model_name=r.model_name,
            )
        version, run_id = str(info.registered_model_version), run.info.run_id
    version_tags = (
        tags
        | {f"metric.{k}": str(v) for k, v in metrics.items()}
        | {
            "gate_passed": str(gate["passed"]).lower(),
            "artifact": artifact,
            "model_digest": digest,
            "primary_metric": params.gate.primary_metric,
            # where it was trained (a GPU host, README "Scaling out") and registered
            "trained_on.host": str(train.get("host", "unknown")),
            "trained_on.workdir": str(train.get("workdir", "unknown")),
            "trained_on.device": str(train.get("device_name", "unknown")),
            "registered_on.host": socket.gethostname(),
            "registered_on.workdir": str(repo.resolve()),
        }
    )
    if gate.get("champion"):
        version_tags |= {"gate.champion_version": str(gate["champion"]["version"])} | {
            f"gate.champion.{k}": str(v) for k, v in gate["champion"].items() if k != "version"
        }
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


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description="Register the gated model in MLflow's model registry.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--merged", default="artifacts/merged")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--out", default="reports/registration.json")
    args = ap.parse_args(argv)
    res = run_register(
        load_params(args.params), args.repo, args.merged, args.adapter, args.reports, args.out
    )
    how = "same weights as an existing version: re-tagged" if res["reused"] else "new version"
    print(
        f"register: {res['name']} v{res['version']} ({how}; alias challenger), run {res['run_id']}"
    )


if __name__ == "__main__":
    main()
