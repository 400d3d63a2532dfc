"""OCR grounding: the words on a receipt, read by a packaged engine, as layout-preserving lines.

The engine is rapidocr (PP-OCR detection + recognition as ONNX models shipped inside its
wheel, run by onnxruntime): nothing is downloaded, ever. Its words are grouped into lines by
baseline and ordered left to right, so a menu line reads "ICE BLACKCOFFE 2 82,000" as it is
printed. That text goes into the prompt after the image (`ocr_prompt`), as LLaVA-1.5's
TextVQA evaluation gives its OCR tokens, through one function for train, evaluate, predict,
serving and scoring.

A line whose every word the image's edge cuts is left out (`framed`): on a photo it is the
table or a notebook beside the receipt, not the receipt photographed whole.

OCR runs once per record at ingest and is stored as a column of the versioned dataset.
`OcrCache` lets a shipped file of the words already read (keyed by image sha256 and engine)
stand in for the engine, so a fresh clone only reads what is new.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from tasks.core.cpu import cores


@dataclass(frozen=True)
class Word:
    text: str
    # the engine's quadrilateral: top-left, top-right, bottom-right, bottom-left (image pixels)
    quad: tuple[tuple[float, float], ...]
    score: float

    def as_row(self) -> list:
        return [self.text, [[round(x, 1), round(y, 1)] for x, y in self.quad], round(self.score, 4)]

    @classmethod
    def from_row(cls, row: list) -> Word:
        return cls(row[0], tuple((float(x), float(y)) for x, y in row[1]), float(row[2]))


def engine_id() -> str:
    """Which engine read the words: part of the cache key, so another version reads again."""
    from importlib.metadata import version

    return f"rapidocr-{version('rapidocr')}/onnxruntime-{version('onnxruntime')}"


def _new_engine(threads: int):
    import logging

    from rapidocr import RapidOCR

    eng = RapidOCR(
        params={
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return eng


@lru_cache(maxsize=1)
def _engine():
    """This process's engine, with onnxruntime on every core OCR may use."""
    return _new_engine(cores())


_worker = threading.local()


def _worker_engine():
    """A pool thread's own engine, on one onnxruntime thread."""
    if not hasattr(_worker, "engine"):
        _worker.engine = _new_engine(1)
    return _worker.engine


def read_words(image: Image.Image, engine=None) -> list[Word]:
    """Every word (text run) the engine (default: this process's) finds, with its
    quadrilateral and confidence."""
    import numpy as np

    rgb = np.asarray(image.convert("RGB"))[:, :, ::-1]  # the engine takes BGR, as OpenCV reads
    out = (engine or _engine())(np.ascontiguousarray(rgb))
    if out.boxes is None or out.txts is None:
        return []
    return [
        Word(text.strip(), tuple((float(x), float(y)) for x, y in quad), float(score))
        for quad, text, score in zip(out.boxes, out.txts, out.scores, strict=True)
        if text.strip()
    ]


def layout_lines(words: list[Word]) -> list[str]:
    """Words grouped into printed lines and ordered left to right in each; lines top to bottom."""
    return [line_text(line) for line in grouped(words)]


def line_text(line: list[Word]) -> str:
    """A printed line's words as the prompt carries them."""
    return " ".join(w.text for w in line)


def grouped(words: list[Word]) -> list[list[Word]]:
    """The printed lines' words, left to right; lines top to bottom.

    A photographed receipt is often turned a little: the page's slant (the median slope of the
    words' top edges) is undone first, then a word joins a line when its centre is within half
    a word's height of the line's."""
    if not words:
        return []
    slopes = sorted(
        math.atan2(w.quad[1][1] - w.quad[0][1], w.quad[1][0] - w.quad[0][0]) for w in words
    )
    angle = slopes[len(slopes) // 2]
    cos, sin = math.cos(angle), math.sin(angle)

    def centre(w: Word) -> tuple[float, float]:
        x = sum(p[0] for p in w.quad) / 4
        y = sum(p[1] for p in w.quad) / 4
        return x * cos + y * sin, -x * sin + y * cos  # in the page's own axes

    height = (
        statistics.median(
            math.dist(w.quad[0], w.quad[3]) + math.dist(w.quad[1], w.quad[2]) for w in words
        )
        / 2
        or 1.0
    )
    placed = sorted(((centre(w), w) for w in words), key=lambda cw: cw[0][1])
    lines: list[list[tuple[float, Word]]] = []
    centres: list[float] = []
    for (x, y), w in placed:
        if centres and abs(y - centres[-1]) <= 0.5 * height:
            lines[-1].append((x, w))
            centres[-1] += (y - centres[-1]) / len(lines[-1])
        else:
            lines.append([(x, w)])
            centres.append(y)
    return [[w for _, w in sorted(line, key=lambda xw: xw[0])] for line in lines]


# How close to the image's edge (pixels) a word's box may come and still be read.
EDGE_PX = 1.0


def framed(words: list[Word], size: tuple[int, int]) -> tuple[list[list[Word]], int]:
    """The printed lines (`grouped`), less those the image's edge cuts, and how many words
    those held. The engine clips a box at the edge, so a box that reaches it holds a word the
    frame cuts; a line all of whose words are cut is not on a receipt photographed whole (on
    a photo: the table, or a notebook's writing running off the picture). A cut word on a line
    with words clear of the edge stays: a price at the edge of a tight photo is still read.
    No word the engine reads on the rendered CORD receipts is closer than 20 px to the edge
    (`python -m bench.edge_lines --renders data/images`)."""
    lines = grouped(words)
    kept = [line for line in lines if not all(edge_distance(w, size) <= EDGE_PX for w in line)]
    return kept, len(words) - sum(len(line) for line in kept)


def edge_distance(w: Word, size: tuple[int, int]) -> float:
    """How far (pixels) a word's box lies from the nearest edge of an image of this size."""
    xs = [x for x, _ in w.quad]
    ys = [y for _, y in w.quad]
    return min(min(xs), min(ys), size[0] - 1 - max(xs), size[1] - 1 - max(ys))


def ocr_read(words: list[Word], size: tuple[int, int] | None) -> tuple[str, int]:
    """The text the prompt carries for an image's words (its lines `framed` by its size, when
    known), and how many words the edge cut out of it."""
    if size is None:
        return as_text(words), 0
    kept, cut = framed(words, size)
    return "\n".join(line_text(line) for line in kept), cut


def ocr_text(image: Image.Image) -> str:
    """The receipt's text as the prompt carries it (`ocr_read` of its words)."""
    return ocr_read(read_words(image), image.size)[0]


def as_text(words: list[Word]) -> str:
    """The words as the prompt carries them: their printed lines, one per line."""
    return "\n".join(layout_lines(words))


def image_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OcrCache:
    """The engine's words by (image sha256, engine id), read from and written to a gzipped
    JSON-lines file. Words, not lines, are kept: a change of layout needs no new reading."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.engine = engine_id()
        self.entries: dict[str, list[Word]] = {}
        self.misses = 0
        if self.path is not None and self.path.is_file():
            with gzip.open(self.path, "rt", encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    if row.get("engine") == self.engine:
                        self.entries[row["sha256"]] = [Word.from_row(w) for w in row["words"]]

    def save(self, keep: set[str] | None = None) -> None:
        """Write the entries (only those whose sha256 is in `keep`, when given), atomically."""
        if self.path is None:
            return
        from tasks.core.io import write_bytes_atomic

        rows: list[dict[str, Any]] = [
            {"sha256": k, "engine": self.engine, "words": [w.as_row() for w in v]}
            for k, v in sorted(self.entries.items())
            if keep is None or k in keep
        ]
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        write_bytes_atomic(self.path, gzip.compress(blob, compresslevel=9, mtime=0))


def _words_of(data: bytes, engine=None) -> list[Word]:
    """The words on an image; none on one that does not decode (the validate stage names
    that record, and the run stops there)."""
    import io

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return []
    return read_words(image, engine)


@cache
def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, thread_name_prefix="ocr")


def _read_all(read: Callable[..., list[Word]], items: Sequence, workers: int) -> list[list[Word]]:
    """`read(item, engine)` of each item. Two or more are read on `workers` threads, each with
    its own engine on one onnxruntime thread (onnxruntime and OpenCV release the GIL): a
    quarter faster than one engine on every core (`bench.ocr_threads`), and the same words."""
    if len(items) < 2 or workers < 2:
        return [read(item) for item in items]
    return list(_pool(workers).map(lambda item: read(item, _worker_engine()), items))


def ocr_reads(images: Sequence[Image.Image], workers: int | None = None) -> list[tuple[str, int]]:
    """`ocr_read` of each image (its text, and how many words the edge cut), read on `workers`
    threads (default: one per core OCR may use)."""
    found = _read_all(read_words, images, workers or cores())
    return [ocr_read(words, im.size) for words, im in zip(found, images, strict=True)]


def ocr_texts(images: Sequence[Image.Image], workers: int | None = None) -> list[str]:
    """`ocr_text` of each image, read as `ocr_reads` reads them."""
    return [text for text, _ in ocr_reads(images, workers)]


def _size_of(data: bytes) -> tuple[int, int] | None:
    """An image's size from its header (no decoding); None when it is no image."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def read_many(cache: OcrCache, items: list[bytes], workers: int) -> list[str]:
    """OCR text for each image's bytes: the words from the cache, the misses read on
    `workers` threads and added to it; then those clear of the edge laid out as lines."""
    keys = [image_sha256(b) for b in items]
    todo = {k: b for k, b in zip(keys, items, strict=True) if k not in cache.entries}
    for key, words in zip(todo, _read_all(_words_of, list(todo.values()), workers), strict=True):
        cache.entries[key] = words
        cache.misses += 1
    return [ocr_read(cache.entries[k], _size_of(b))[0] for k, b in zip(keys, items, strict=True)]


def main(argv: list[str] | None = None) -> None:
    """Re-make the shipped OCR cache from a raw snapshot: `make ocr-cache`."""
    from tasks.core import cli
    from tasks.core.errors import MissingInput

    ap = cli.parser("OCR every image of a raw snapshot into a cache.", paths=("data", "ocr_cache"))
    ap.add_argument("--workers", type=int, default=cores())

    def body(a, p) -> str:
        folder = Path(a.data) / "images"
        if not folder.is_dir():
            raise MissingInput(f"{folder}: no images folder (a raw snapshot: `make data`)")
        images = sorted(f for f in folder.iterdir() if f.is_file())
        cache = OcrCache(a.ocr_cache)
        data = [f.read_bytes() for f in images]
        read_many(cache, data, a.workers)
        cache.save(keep={image_sha256(b) for b in data})
        return (
            f"ocr: {len(images)} images, {cache.misses} read, "
            f"{len(images) - cache.misses} cached -> {a.ocr_cache}"
        )

    cli.run("ocr", ap, body, argv)


if __name__ == "__main__":
    main()
