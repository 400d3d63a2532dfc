"""MLflow wiring: where tracking goes, and the registry client. Nothing happens at import time."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(repo: str | Path = ".") -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store in the repo (mlflow.db)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(repo).resolve() / 'mlflow.db')}"


def setup(experiment: str, repo: str | Path = "."):
    """Point MLflow at the store and make sure the experiment exists with an explicit artifact root.

    Without `artifact_location`, artifacts land in ./mlruns of whatever the cwd is.
    Returns an MlflowClient.
    """
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(tracking_uri(repo))
    if mlflow.get_experiment_by_name(experiment) is None:
        root = (
            os.environ.get("RECEIPT_ARTIFACT_ROOT")
            or (Path(repo).resolve() / "mlartifacts").as_uri()
        )
        mlflow.create_experiment(experiment, artifact_location=f"{root.rstrip('/')}/{experiment}")
    mlflow.set_experiment(experiment)
    return MlflowClient()


def alias_version(client, name: str, alias: str):
    """The model version behind an alias, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
