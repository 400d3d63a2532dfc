"""Typed pipeline parameters, loaded once from params.yaml and passed down.

No module reads params.yaml on its own: entry points call `load_params` and hand
the typed object (or the section they need) to the core functions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticParams(_Section):
    train: int = Field(160, ge=1)
    validation: int = Field(20, ge=1)
    test: int = Field(20, ge=1)
    max_items: int = Field(4, ge=1)
    width: int = Field(336, ge=64)
    seed: int = 0


class DataParams(_Section):
    # synthetic | imagefolder:<dir> | cord-json:<dir> | hf:<dataset id>
    source: str = "synthetic"
    synthetic: SyntheticParams = SyntheticParams()
    # cord-json renders at the annotation's size, scaled so the long side is at most this.
    render_max_side: int = Field(1280, ge=64)


class IngestParams(_Section):
    prompt: str = "Extract the receipt as JSON."
    # A source without a test split gets one carved from train: this many records, by seed.
    carve_test_size: int = Field(100, ge=1)
    carve_validation_size: int = Field(100, ge=1)
    seed: int = 0


class ValidateParams(_Section):
    min_width: int = 32
    max_width: int = 8192
    min_height: int = 32
    max_height: int = 8192
    min_split_size: int = 1
    max_split_size: int = 100_000


class TinyModelParams(_Section):
    """Size knobs of the embedded tiny LLaVA (built from config, never downloaded)."""

    image_size: int = 224
    patch_size: int = 32
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    vocab_size: int = 600
    seed: int = 0


class ModelParams(_Section):
    # "tiny" builds the embedded model; anything else is a hub id or local path.
    base: str = "tiny"
    revision: str | None = None
    tiny: TinyModelParams = TinyModelParams()


class TrainParams(_Section):
    quantization: Literal["nf4", "none"] = "nf4"
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: str | list[str] = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"
    # Extra fully-trained modules (peft modules_to_save). Empty for a 7B base: plain QLoRA.
    modules_to_save: list[str] = []
    gradient_checkpointing: bool = True
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = 2
    logging_steps: int = 5
    seed: int = 0
    # Data-parallel processes for the train stage (DDP through torchrun): "auto" = one per
    # visible GPU (1 on CPU). RECEIPT_NUM_PROCESSES overrides it. batch_size is per process.
    num_processes: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"


class EvaluateParams(_Section):
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    # Evaluate at most this many test records (0 = all).
    limit: int = Field(0, ge=0)


class GateParams(_Section):
    min_json_valid_rate: float = 0.9
    min_field_f1: float = 0.0
    min_ted_accuracy: float = 0.0
    # Against the current champion, re-evaluated on the same test split.
    max_regression: float = 0.02
    # Promotion needs the challenger to beat the champion on this metric.
    primary_metric: Literal["json_valid_rate", "ted_accuracy", "field_f1", "exact_match"] = (
        "ted_accuracy"
    )
    # ... by at least this much: reruns differ by run-to-run noise, which is no reason to promote.
    min_improvement: float = Field(0.01, ge=0.0)


class RegisterParams(_Section):
    model_name: str = "receipt-llava"
    experiment: str = "receipt-llava"
    # What the registered pyfunc carries: the merged model (tiny), or the adapter plus a
    # pinned reference to the hub base (a 7B base; no 14 GB copy in the artifact store).
    artifact: Literal["auto", "merged", "adapter"] = "auto"


class Params(_Section):
    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    gate: GateParams = GateParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def digest(self) -> str:
        """A short, stable hash of every param: tagged on registered model versions."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; errors name the offending key."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return Params.model_validate(raw)
    except Exception as exc:  # pydantic's message already names the key path
        raise ValueError(f"{path}: invalid params:\n{exc}") from exc
