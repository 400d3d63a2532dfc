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

    A local store gets `<repo>/mlartifacts` (without it, artifacts land in ./mlruns of whatever
    the cwd is); a tracking server keeps its own (its artifact proxy, `mlflow-artifacts:/`).
    RECEIPT_ARTIFACT_ROOT overrides both. Returns an MlflowClient.
    """
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri(repo)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        root = os.environ.get("RECEIPT_ARTIFACT_ROOT")
        if not root and not uri.startswith(("http://", "https://")):
            root = (Path(repo).resolve() / "mlartifacts").as_uri()
        location = f"{root.rstrip('/')}/{experiment}" if root else None
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return MlflowClient()


def alias_version(client, name: str, alias: str):
    """The model version behind an alias, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_pyfunc(model_uri: str, repo: str | Path = "."):
    """A registered version's pyfunc (e.g. `models:/receipt-llava@champion`) from the project's
    registry (MLFLOW_TRACKING_URI, else the repo's mlflow.db); one line naming the URI and the
    store when it cannot be had."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from tasks.core.errors import MissingInput

    uri = tracking_uri(repo)
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        why = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise MissingInput(f"{model_uri}: cannot load it from {uri} ({why})") from exc
