"""Receipt images in, gt_parse dicts out: decoding an image safely, and a loaded model that reads.

The one reading path behind `tasks.predict`, batch scoring and the served pyfunc.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat, UnidentifiedImageError

from tasks.core.errors import UserError
from tasks.core.io import MAX_IMAGE_PIXELS  # importing it sets Pillow's limit
from tasks.inference.confidence import judged
from tasks.inference.generation import Settings, scored_answers


class BadImage(UserError):
    pass


class BadModel(UserError):
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
            f"{Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS:,} pixels (tasks.core.io.MAX_IMAGE_PIXELS)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(
            f"{label}: not a readable image ({type(exc).__name__}: {_plain(exc)})"
        ) from exc
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
        from tasks.model.modeling import load_model, load_processor

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

    def warm_up(self) -> None:
        """Read one small printed line, so the first receipt after loading does not also pay
        for onnxruntime's and generate's first-call setup (about 3 s on 2 cores)."""
        from PIL import ImageDraw

        from tasks.inference.ocr import ocr_text

        image = Image.new("RGB", (320, 96), "white")
        ImageDraw.Draw(image).text((16, 40), "TOTAL 10,000", fill="black")
        s = self.settings.but(max_new_tokens=16)
        scored_answers(
            self.model, self.processor, [image], s, [ocr_text(image)] if s.ocr_prompt else None
        )

    def read(
        self, images: list[Image.Image], json_schema: bool | None = None
    ) -> list[dict[str, Any]]:
        """gt_parse dicts for the images; `json_schema` overrides the settings' for this call."""
        from tasks.inference.ocr import ocr_reads

        s = self.settings if json_schema is None else self.settings.but(json_schema=json_schema)
        reads = ocr_reads(images) if s.ocr_prompt else [(None, 0)] * len(images)
        texts: list[str | None] = [t for t, _ in reads]
        ocr = [t or "" for t in texts] if s.ocr_prompt else None
        outputs = scored_answers(self.model, self.processor, images, s, ocr)
        rows = []
        for o, im, (t, cut) in zip(outputs, images, reads, strict=True):
            row = judged(o, t, s.min_confidence)
            about_input = receipt_warnings(im) + ocr_warnings(t, cut)
            rows.append(row | {"warnings": about_input + row["warnings"]})
        return rows


def ocr_warnings(text: str | None, cut: int) -> list[str]:
    """What a reader should know about the OCR text an answer rests on."""
    found = ["OCR found no text: the answer rests on the image alone"] if text == "" else []
    if cut:
        found.append(
            f"{cut} OCR word(s) on lines cut by the image's edge were left out of the prompt "
            "(not on a receipt photographed whole)"
        )
    return found


# The served pyfunc's output columns: one per field of a read answer, JSON text where the field
# is not a plain value (tasks.inference.serving writes them; predict and score read them back).
ANSWER = ("json", "valid_json", "raw", "confidence", "warnings")
_AS_JSON = ("json", "confidence", "warnings")


def served_columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    """`ReceiptReader.read` rows as the pyfunc's output columns."""
    return {
        k: [json.dumps(r[k], ensure_ascii=False) if k in _AS_JSON else r[k] for r in rows]
        for k in ANSWER
    }


def from_served(record: dict[str, Any]) -> dict[str, Any]:
    """One row of the pyfunc's output back as a read answer."""
    return {k: json.loads(record[k]) if k in _AS_JSON else record[k] for k in ANSWER} | {
        "valid_json": bool(record["valid_json"])
    }


def _plain(exc: BaseException) -> str:
    """The exception's message without object addresses (`<_io.BytesIO object at 0x…>`), so
    the same bad file always gets the same words."""
    return re.sub(r"<([\w.]+) object at 0x[0-9a-f]+>", r"<\1>", str(exc))
