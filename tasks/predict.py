"""Read receipts: image(s) in, JSON out, from a merged model directory or an MLflow model URI.

python -m tasks.predict --model artifacts/merged receipt.png [more.png ...]
python -m tasks.predict --model models:/receipt-llava@champion receipt.png
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat, UnidentifiedImageError

from tasks.config import load_params
from tasks.generation import Settings, answers
from tasks.io import MAX_IMAGE_PIXELS  # importing it sets Pillow's limit


class BadImage(ValueError):
    pass


class BadModel(ValueError):
    pass


# Input far from a receipt gets a warning beside its answer (the model answers anyway).
BLANK_STDDEV = 3.0  # grey-level standard deviation below which an image is nearly blank
MAX_ASPECT = 8.0  # long side / short side above which it is no receipt photo or scan


def open_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Decode an image from a path or bytes; one clear line for anything that is not one."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError as exc:
        raise BadImage(f"{label}: no such file") from exc
    except IsADirectoryError as exc:
        raise BadImage(f"{label}: is a directory, not an image") from exc
    except PermissionError as exc:
        raise BadImage(f"{label}: cannot be read (permission denied)") from exc
    if not data:
        raise BadImage(f"{label}: empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(
            f"{label}: too large to open safely ({exc}); the limit is "
            f"{Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS:,} pixels (tasks.io.MAX_IMAGE_PIXELS)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"{label}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return img.convert("RGB")


def receipt_warnings(image: Image.Image) -> list[str]:
    """Why this input may be far from a receipt: nearly blank, or an extreme aspect ratio."""
    out = []
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    if spread < BLANK_STDDEV:
        out.append(f"nearly blank: grey-level standard deviation {spread:.1f} < {BLANK_STDDEV}")
    w, h = image.size
    ratio = max(w, h) / max(1, min(w, h))
    if ratio > MAX_ASPECT:
        out.append(f"extreme aspect ratio {ratio:.1f}:1 ({w}x{h}) > {MAX_ASPECT}:1")
    return out


class ReceiptReader:
    """A loaded model + processor that turns receipt images into gt_parse dicts."""

    def __init__(
        self,
        model_dir: str | Path,
        settings: Settings,
        base: str | None = None,
        revision: str | None = None,
    ):
        """`model_dir` is a merged model; with `base`, it is an adapter merged onto that base at load."""
        from tasks.modeling import load_model, load_processor

        kw: dict[str, Any] = {"compute_dtype": settings.dtype, "attn": settings.attn}
        if base is None:
            self.model = load_model(str(model_dir), **kw).eval()
        else:
            from peft import PeftModel

            base_model = load_model(base, revision=revision, **kw)
            self.model = (
                PeftModel.from_pretrained(base_model, str(model_dir)).merge_and_unload().eval()
            )
        self.processor = load_processor(str(model_dir))
        self.settings = settings

    def read(
        self, images: list[Image.Image], json_schema: bool | None = None
    ) -> list[dict[str, Any]]:
        """gt_parse dicts for the images; `json_schema` overrides the settings' for this call."""
        from tasks.ocr import ocr_text
        from tasks.receipt_json import is_valid_json, parse_target

        s = self.settings if json_schema is None else self.settings.but(json_schema=json_schema)
        ocr = [ocr_text(im) for im in images] if s.ocr_prompt else None
        outputs = answers(self.model, self.processor, images, s, ocr)
        texts: list[str | None] = list(ocr) if ocr is not None else [None] * len(images)
        return [
            {
                "json": parse_target(o),
                "valid_json": is_valid_json(o),
                "raw": o,
                "warnings": receipt_warnings(im)
                + (["OCR found no text: the answer rests on the image alone"] if t == "" else []),
            }
            for o, im, t in zip(outputs, images, texts, strict=True)
        ]


def served_json_schema(model, asked: bool | None, uri: str) -> bool:
    """The `json_schema` setting a loaded version answers with: `asked`, or its default. A
    version registered before the setting existed can only answer unconstrained."""
    sig = model.metadata.signature
    specs = {p.name: p for p in (sig.params.params if sig is not None and sig.params else [])}
    if "json_schema" in specs:
        return bool(specs["json_schema"].default) if asked is None else asked
    if asked:
        raise BadModel(f"{uri}: registered before constrained decoding; it has no json_schema")
    return False


def predict(
    model: str, paths: list[str], settings: Settings, json_schema: bool | None = None
) -> list[dict[str, Any]]:
    """Read the images with a model dir (under `settings`) or an MLflow model URI (under the
    settings it was registered with); `json_schema`, when given, overrides either's."""
    images = [open_image(p) for p in paths]  # all images checked before the model loads
    if model.startswith(("models:/", "runs:/")):
        import mlflow.pyfunc
        import pandas as pd
        from mlflow.exceptions import MlflowException

        from tasks.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        try:
            pyfunc = mlflow.pyfunc.load_model(model)
        except MlflowException as exc:
            raise BadModel(
                f"{model}: cannot load it from {tracking_uri()} ({exc.message})"
            ) from exc
        held = served_json_schema(pyfunc, json_schema, model)  # refused if it can't
        frame = pyfunc.predict(
            pd.DataFrame({"image": [Path(p).read_bytes() for p in paths]}),
            params={"json_schema": held} if json_schema is not None else None,
        )
        # versions registered before the warnings column: computed here, the same way
        said = frame["warnings"] if "warnings" in frame else [None] * len(paths)
        return [
            {
                "image": p,
                "json": json.loads(j),
                "valid_json": bool(v),
                "raw": r,
                "warnings": json.loads(w) if w is not None else receipt_warnings(im),
            }
            for p, j, v, r, w, im in zip(
                paths, frame["json"], frame["valid_json"], frame["raw"], said, images, strict=True
            )
        ]
    if not (Path(model) / "config.json").is_file():
        raise BadModel(
            f"{model}: no model directory here (config.json missing); `make run` writes "
            "artifacts/merged, or give a registry URI such as models:/receipt-llava@champion"
        )
    reader = ReceiptReader(model, settings)
    read = reader.read(images, json_schema=json_schema)
    return [{"image": p, **r} for p, r in zip(paths, read, strict=True)]


def main(argv: list[str] | None = None) -> None:
    from tasks.io import quiet_telemetry

    quiet_telemetry()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="artifacts/merged", help="merged model directory")
    ap.add_argument("--params", default="params.yaml", help="settings for a model directory")
    ap.add_argument(
        "--json-schema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold answers to CORD's JSON schema (default: the params' or the version's)",
    )
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    try:
        settings = Settings.from_params(load_params(args.params))
        results = predict(args.model, args.images, settings, args.json_schema)
    except (BadImage, BadModel) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        sys.exit(2)
    for r in results:
        row = {"image": r["image"], "json": r["json"], "valid_json": r["valid_json"]}
        if r["warnings"]:
            row["warnings"] = r["warnings"]
            print(f"predict: {r['image']}: warning: {'; '.join(r['warnings'])}", file=sys.stderr)
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
