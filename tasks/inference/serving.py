"""The MLflow pyfunc that serves a registered version: receipt image in, JSON out.

Logged from this file (`python_model="tasks/inference/serving.py"`): a pyfunc class defined in
__main__ does not pickle. Input: a DataFrame with an `image` column of PNG/JPEG bytes
(base64 strings over `mlflow models serve`'s JSON). Output: `json` (the parsed receipt as
JSON text), `valid_json`, `raw` (the model's text), `confidence` (JSON: the mean and minimum
log-probability of the answer's value tokens) and `warnings` (a JSON list: why the input may be
far from a receipt, e.g. nearly blank, and why the answer may be wrong: invalid JSON, confidence
under the threshold registered with the version, an amount not in the OCR text). A row that is no image (not base64, not a
picture, beyond the pixel limit) fails the whole request with an MlflowException naming each
bad row and why: HTTP 400 from the scoring server, which goes on serving. One request
param, `json_schema` (`"params": {"json_schema": true}` beside `dataframe_split`), holds the
answers to CORD's JSON schema (tasks.inference.constrained); its default is the registered setting.
"""

from __future__ import annotations

import base64
from typing import Any

import mlflow.models
import pandas as pd
from mlflow.pyfunc import PythonModel


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return base64.b64decode(value)


class ReceiptModel(PythonModel):
    def load_context(self, context) -> None:
        from tasks.inference.generation import Settings
        from tasks.inference.reader import ReceiptReader

        cfg = context.model_config
        settings = Settings.from_config(cfg)  # as evaluated: logged at registration
        if "model" in context.artifacts:  # a merged model (the tiny default)
            self.reader = ReceiptReader(context.artifacts["model"], settings)
        else:  # an adapter + a pinned hub base (7B): merged in memory at load time
            self.reader = ReceiptReader(
                context.artifacts["adapter"],
                settings,
                base=cfg["base"],
                revision=cfg.get("revision"),
            )
        self.reader.warm_up()  # the first request is answered as fast as the next

    def predict(
        self, context, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from tasks.inference.reader import BadImage, open_image, served_columns

        images, bad = [], []
        for i, v in enumerate(model_input["image"]):
            try:
                images.append(open_image(_bytes(v), name=f"row {i}"))
            except (BadImage, ValueError, TypeError) as exc:  # bad base64 is a ValueError
                bad.append(str(exc) if isinstance(exc, BadImage) else f"row {i}: {exc}")
        if bad:  # a 400 over `mlflow models serve`, naming every bad row; nothing is read
            raise MlflowException("; ".join(bad), error_code=INVALID_PARAMETER_VALUE)
        json_schema = (params or {}).get("json_schema")
        rows = self.reader.read(
            images, json_schema=None if json_schema is None else bool(json_schema)
        )
        # warnings: about the input and about the answer (tasks.inference.confidence)
        return pd.DataFrame(served_columns(rows))


mlflow.models.set_model(ReceiptModel())
