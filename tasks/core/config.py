"""Typed pipeline parameters, loaded once from params.yaml and passed down.

No module reads params.yaml on its own: entry points call `load_params` and hand
the typed object (or the section they need) to the core functions. params.yaml is the one
source of the values: no field has a default here, so a key deleted from params.yaml fails
at load with its path instead of silently changing the recipe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.core.errors import BadInput


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticParams(_Section):
    train: int = Field(ge=1)
    validation: int = Field(ge=1)
    test: int = Field(ge=1)
    max_items: int = Field(ge=1)
    # The slip, in printed character cells (12 px each): columns per line (plus a one-cell
    # right margin) and lines per slip.
    columns: int = Field(ge=15)
    rows: int = Field(ge=12)
    seed: int

    @model_validator(mode="after")
    def _fits(self) -> SyntheticParams:
        # store, rule, two lines per item, rule, up to six total lines
        if self.rows < 9 + 2 * self.max_items:
            raise ValueError(
                f"data.synthetic: a receipt of {self.max_items} items can take "
                f"{9 + 2 * self.max_items} lines; rows is {self.rows}"
            )
        return self


class CordParams(_Section):
    # CORD's dev receipts are divided by a seeded draw: this many go to test, the rest to
    # validation. CORD's train is the train split.
    test_size: int = Field(ge=1)
    seed: int
    # Leave out the receipts listed in assets/cord/excluded.json (annotation slips that the
    # validate stage refuses, and train copies of dev receipts), each with its reason.
    exclude_flagged: bool


class DataParams(_Section):
    # cord | synthetic | imagefolder:<dir> | cord-json:<dir> | hf:<dataset id>
    source: str
    synthetic: SyntheticParams
    cord: CordParams
    # cord and cord-json render at the annotation's size, scaled so the long side is at most this.
    render_max_side: int = Field(ge=64)


class IngestParams(_Section):
    prompt: str
    # A source without a test split gets one carved from train: this many records, by seed.
    carve_test_size: int = Field(ge=1)
    carve_validation_size: int = Field(ge=1)
    seed: int


class ValidateParams(_Section):
    min_width: int
    max_width: int
    min_height: int
    max_height: int
    min_split_size: int
    max_split_size: int


class TinyModelParams(_Section):
    """Size knobs of the embedded tiny LLaVA (built from config, never downloaded)."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    max_positions: int
    seed: int


class NaturalReadingParams(_Section):
    """Pretraining's second phase: reading in natural order (runs of spaces collapsed, blank
    lines dropped), so the answer-to-image offset varies as it does in JSON extraction."""

    steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    # Held-out reading (padded and natural) every this many phase-2 steps.
    eval_every: int = Field(ge=1)


class CopyParams(_Section):
    """Pretraining's third phase: copy from the prompt's OCR-like text (tasks/reader/copying.py).
    The language model alone, on text: no image tokens, so a step costs a third of a page's."""

    steps: int = Field(ge=0)
    # The first this many steps only repeat the lines (the copy skill forms there), then a
    # kind drawn per step: repeat, amounts, name | amount, labelled priced lines.
    repeat_steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    max_lines: int = Field(ge=3)
    # Every this many steps, a batch of phase 2's pages instead: reading is kept.
    reading_every: int = Field(ge=1)
    eval_every: int = Field(ge=1)
    eval_records: int = Field(ge=1)  # held-out records of each kind


class PretrainParams(_Section):
    """`make pretrain`: the embedded base learns to read printed text (tasks/reader/pretrain.py)."""

    model: TinyModelParams
    # Phase 1, padded reading (each answer character at a fixed offset from its image cell).
    steps: int = Field(ge=1)
    # The cosine schedule's length: phase 1 may stop before its learning rate reaches 0.
    schedule_steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    # Full pages of dense random text for these steps, then mixed pages (receipt-like lines).
    curriculum_steps: int = Field(ge=1)
    natural: NaturalReadingParams
    copy_phase: CopyParams
    # Held-out reading accuracy every this many steps: the learning curve.
    eval_every: int = Field(ge=1)
    eval_pages: int = Field(ge=1)
    # Page seeds are "pretrain-<seed>-<step>-<i>": disjoint from every split of the data.
    seed: int

    def digest(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ModelParams(_Section):
    # "tiny": the embedded base, pretrained to read (models/tiny-reader, made by `make pretrain`);
    # anything else is a hub id or local path.
    base: str
    revision: str | None
    # How a receipt fits a processor that centre-crops (llava-1.5's resizes the short edge to
    # 336 and crops the long one, cutting off a tall receipt's store and totals): "pad" it to a
    # square first, as LLaVA-1.5 was trained; "resize" it to the square, squashing it; or
    # "crop" as the processor does. Processors that don't crop (the tiny base's) are left alone.
    image_fit: Literal["pad", "resize", "crop"]
    # OCR grounding: the words a packaged OCR engine reads on the receipt (tasks.inference.ocr) go into
    # the prompt after the image, as layout-preserving lines; ingest reads them once per record.
    ocr_prompt: bool


class TrainerArgs(_Section):
    """`transformers.TrainingArguments`, by its own names: handed over as they are
    (`TrainingArguments(**args)`), as TRL's SFTConfig does. What depends on the machine
    (device, precision flags, DDP backend) is set by the train stage, not here."""

    num_train_epochs: float = Field(gt=0)
    max_steps: int
    per_device_train_batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    # cosine: decays from the first step; warmup_stable_decay: holds the rate, then decays
    # (cosine) over the last `train.decay_fraction` of the steps.
    lr_scheduler_type: Literal["cosine", "warmup_stable_decay"]
    warmup_steps: int
    weight_decay: float
    save_steps: int = Field(ge=1)
    save_total_limit: int
    logging_steps: int
    seed: int
    data_seed: int
    # group_by_length: batches of receipts of similar length (less padding when lengths vary,
    # as CORD's do: a few lines to sixty).
    train_sampling_strategy: Literal["random", "group_by_length"]

    @model_validator(mode="after")
    def _steps(self) -> TrainerArgs:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("max_steps: -1 (train for num_train_epochs) or a step count >= 1")
        return self


class OcrBackgroundParams(_Section):
    # Share of training records whose OCR text gets background lines (tasks.data.augment).
    share: float = Field(ge=0, le=1)
    max_lines: int = Field(ge=1)


class TrainParams(_Section):
    quantization: Literal["nf4", "none"]
    compute_dtype: Literal["float32", "bfloat16", "float16"]
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"]
    lora_r: int = Field(ge=1)
    lora_alpha: int = Field(gt=0)
    lora_dropout: float = Field(ge=0.0, lt=1.0)
    lora_target_modules: str | list[str]
    # A training record longer than the base's positions: "refuse" the run, naming it, or
    # "skip" it (named in reports/train.json and the log). Test records are never skipped.
    too_long: Literal["refuse", "skip"]
    # Extra fully-trained modules (peft modules_to_save). Empty for a 7B base: plain QLoRA.
    modules_to_save: list[str]
    gradient_checkpointing: bool
    # A batch is padded to a multiple of this many tokens: fewer distinct shapes, so a CPU's
    # oneDNN bfloat16 kernels are built for (and cache) fewer of them. 1 = the longest record.
    pad_to_multiple_of: int = Field(ge=1)
    decay_fraction: float = Field(gt=0, le=1)
    # Data-parallel processes for the train stage (DDP through torchrun): "auto" = one per
    # visible GPU (1 on CPU). per_device_train_batch_size is per process.
    num_processes: Literal["auto"] | Annotated[int, Field(ge=1)]
    # Background lines in the OCR text of some training records, as photos have; off: share 0.
    ocr_background: OcrBackgroundParams
    # The adapter written is the mean of the LoRA weights at the end of the last this-many
    # epochs (checkpoint averaging); 1 = the last step's weights as they are.
    average_last: int = Field(ge=1)
    args: TrainerArgs

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.attn_implementation == "flash_attention_2" and self.compute_dtype == "float32":
            raise ValueError(
                "train.attn_implementation flash_attention_2 needs train.compute_dtype "
                "bfloat16 or float16 (flash-attn has no float32 kernels)"
            )
        return self


class ConfidenceParams(_Section):
    # A validation answer counts as right at this per-receipt field F1 or above.
    right_f1: float = Field(ge=0, le=1)
    # The right answers are the reference when there are at least this many; else all answers.
    min_right: int = Field(ge=1)
    # The warning threshold leaves this share of the reference validation answers unwarned.
    keep: float = Field(gt=0, le=1)


class EvaluateParams(_Section):
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    # Evaluate at most this many test records (0 = all).
    limit: int = Field(ge=0)
    # Hold generation to CORD's JSON schema (tasks.inference.constrained): evaluate, the gate, and the
    # registered model's default (a request or `make score` may ask otherwise).
    json_schema: bool
    # With json_schema and model.ocr_prompt, every value is held to a span of the receipt's OCR
    # lines (tasks.inference.constrained.SpanGrammars): the answer copies, it cannot invent.
    ocr_spans: bool
    # How the low-confidence threshold is picked on the validation split (tasks.evaluation.calibration).
    confidence: ConfidenceParams


class GateParams(_Section):
    min_json_valid_rate: float
    min_field_f1: float
    min_ted_accuracy: float
    # Against the current champion, re-evaluated on the same test split.
    max_regression: float
    # Promotion needs the challenger to beat the champion on this metric.
    primary_metric: Literal["json_valid_rate", "ted_accuracy", "field_f1", "exact_match"]
    # ... by at least this much: reruns differ by run-to-run noise, which is no reason to promote.
    min_improvement: float = Field(ge=0.0)


class RegisterParams(_Section):
    model_name: str
    experiment: str
    # What the registered pyfunc carries: the merged model (tiny), or the adapter plus a
    # pinned reference to the hub base (a 7B base; no 14 GB copy in the artifact store).
    artifact: Literal["auto", "merged", "adapter"]


class RemoteParams(_Section):
    # The train stage on a GPU host that shares no disk (the retrain flow's train_deployment,
    # prefect.yaml): in such a handed-over run, push the checkpoint to the DVC remote every this many steps
    # (0 = never), so that a retried run resumes from it on any host. Pushes happen on the
    # Trainer's saves (train.args.save_steps).
    checkpoint_every: int = Field(ge=0)


class ServeParams(_Section):
    # `make serve` (tasks.serve): a request body larger than this is refused with 413
    max_request_mb: float = Field(gt=0)


class PathsParams(_Section):
    """Where each stage reads and writes: the one declaration (dvc.yaml reads these keys, and
    every command's path options default to them)."""

    data: str  # the raw snapshot, versioned by data.dvc
    ocr_cache: str  # OCR already read, keyed by image sha256 (shipped: `make ocr-cache`)
    dataset: str
    validation: str
    data_docs: str
    reader: str  # the embedded base, pretrained to read (`make pretrain`)
    base: str
    adapter: str
    checkpoints: str
    train_summary: str
    train_loss: str
    metrics: str
    predictions: str
    fields: str
    review: str
    champion: str
    gate: str
    merged: str
    reports: str
    registration: str
    score: str


class Params(_Section):
    paths: PathsParams
    data: DataParams
    ingest: IngestParams
    validate_: ValidateParams = Field(alias="validate")
    pretrain: PretrainParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    register_: RegisterParams = Field(alias="register")
    remote: RemoteParams
    serve: ServeParams

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def digest(self) -> str:
        """A short, stable hash of every param: tagged on registered model versions."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ParamsError(BadInput):
    pass


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; a ParamsError names the file and each bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not YAML ({' '.join(str(exc).split())})") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{path}: invalid params: {_explain(exc)}") from exc


def _explain(exc: ValidationError) -> str:
    """pydantic's errors as one line: `train.lora_r: Input should be ...; data: Field required`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
    )
