"""Photo-like rendering of a CORD annotation, in the spirit of SynthDoG.

Every word is drawn at its real quadrilateral (a perspective warp of the rendered word onto
the quad), in a TrueType face chosen per receipt (sans, mono, serif; regular and bold; the
quad's own width stretches or condenses it), on thermal-paper texture. The receipt is then
photographed: a small rotation and perspective tilt on a darker background, uneven light,
blur, sensor noise and JPEG compression. Every effect is drawn from a generator seeded by
the record id, and nothing depends on the CPU's instruction set (see `_solve`), so a record
renders to the same bytes on every run and machine, in any order:
`render_photos` draws many on threads (PIL and numpy release the GIL), one per core.

The faces are matplotlib's bundled DejaVu, STIX and Computer Modern TrueType files: real
fonts, installed with the project, the same on every machine.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tasks.core.cpu import cores
from tasks.core.errors import BadInput

# (file in matplotlib's mpl-data/fonts/ttf, how often a receipt gets it). Thermal printers
# mostly print mono or plain sans; serif and bold appear on headers and older printers.
FACES = (
    ("DejaVuSansMono.ttf", 4),
    ("DejaVuSansMono-Bold.ttf", 2),
    ("DejaVuSans.ttf", 3),
    ("DejaVuSans-Bold.ttf", 2),
    ("DejaVuSerif.ttf", 1),
    ("DejaVuSerif-Bold.ttf", 1),
    ("cmtt10.ttf", 1),
    ("STIXGeneral.ttf", 1),
)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def face(name: str, size: int) -> ImageFont.FreeTypeFont:
    """The face at this size, loaded once per thread: a FreeType face is not shared between
    threads."""
    return _face(threading.get_ident(), name, max(6, size))


@lru_cache(maxsize=1024)
def _face(thread: int, name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / name), size=size)


def _quad_points(quad: dict[str, Any], scale: float) -> list[tuple[float, float]]:
    return [(quad[f"x{i}"] * scale, quad[f"y{i}"] * scale) for i in range(1, 5)]


def _perspective_coeffs(
    src: list[tuple[float, float]], dst: list[tuple[float, float]]
) -> list[float]:
    """Coefficients for PIL's PERSPECTIVE transform mapping output points `dst` to input `src`."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v])
    return _solve(rows)


def _solve(aug: list[list[float]]) -> list[float]:
    """x of the square system [A | b] (Gauss-Jordan, partial pivoting) in Python floats.

    Not numpy.linalg: LAPACK through OpenBLAS picks its kernels by CPU, and their last bits
    differ (AVX512 or AVX2 machines; OPENBLAS_CORETYPE shows it on one machine). A word's
    warp is interpolated from these coefficients, so a last-bit change moves pixels, and the
    same record rendered to other bytes on another CPU (another data hash, OCR cache misses).
    Python's float arithmetic is IEEE double, one rounding per operation, on every CPU.
    ValueError when a pivot is exactly 0: a quad with three corners on one line, at whole
    pixels (scaled corners can miss 0 by rounding; such a word is drawn with whatever the
    near-singular solve gives, as it was with lstsq)."""
    n = len(aug)
    m = [list(map(float, row)) for row in aug]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        if m[col][col] == 0.0:
            raise ValueError("singular system: a degenerate quad")
        for r in range(n):
            if r != col and m[r][col] != 0.0:
                k = m[r][col] / m[col][col]
                m[r] = [a - k * b for a, b in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def _word_mask(text: str, font_name: str, height: int) -> Image.Image:
    """The word's glyphs as a mask, tight around the ink."""
    f = face(font_name, height)
    left, top, right, bottom = f.getbbox(text)
    w, h = max(1, int(right - left)), max(1, int(bottom - top))
    mask = Image.new("L", (w + 2, h + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=f, fill=255)
    return mask


def _draw_word(
    ink_layer: Image.Image, text: str, quad: list[tuple[float, float]], font_name: str
) -> None:
    """Warp the rendered word onto its quad (top-left, top-right, bottom-right, bottom-left)."""
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    x0, y0 = int(min(xs)), int(min(ys))
    x1, y1 = int(max(xs)) + 1, int(max(ys)) + 1
    if x1 - x0 < 2 or y1 - y0 < 2 or not text.strip():
        return
    height = max(6, int(round(((quad[3][1] - quad[0][1]) + (quad[2][1] - quad[1][1])) / 2)))
    mask = _word_mask(text, font_name, height * 2)  # twice the size, then warped down: crisp
    w, h = mask.size
    local = [(px - x0, py - y0) for px, py in quad]
    coeffs = _perspective_coeffs([(0, 0), (w, 0), (w, h), (0, h)], local)
    warped = mask.transform(
        (x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    )
    ink_layer.paste(warped, (x0, y0), warped)


def thermal_paper(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Off-white paper with low-frequency mottling, faint print-head streaks and grain (0..1)."""
    base = rng.uniform(0.86, 0.97)
    small = rng.normal(0.0, 1.0, (max(2, height // 64), max(2, width // 64)))
    mottle = np.asarray(
        Image.fromarray(((small - small.min()) / (np.ptp(small) + 1e-9) * 255).astype(np.uint8))
        .resize((width, height), Image.Resampling.BICUBIC)
        .convert("F")
    )
    streaks = rng.normal(0.0, 0.008, (1, width)).repeat(height, axis=0)
    grain = rng.normal(0.0, 0.015, (height, width))
    return base + (mottle / 255.0 - 0.5) * 0.05 + streaks + grain


def _uneven_light(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth gain field: a linear gradient and one soft bright or dark spot."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gx, gy = rng.uniform(-0.25, 0.25, 2)
    field = 1.0 + gx * (xx / width - 0.5) + gy * (yy / height - 0.5)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    r = rng.uniform(0.3, 0.8) * max(width, height)
    spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    return field + rng.uniform(-0.2, 0.15) * spot


def render_photo(ann: dict[str, Any], record_id: str, max_side: int) -> bytes:
    """JPEG bytes of a photo-like receipt drawn from its CORD annotation."""
    try:
        size = ann["meta"]["image_size"]
        width, height = int(size["width"]), int(size["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"record {record_id!r}: field meta.image_size missing or invalid") from exc
    scale = min(1.0, max_side / max(width, height))
    w, h = max(8, int(width * scale)), max(8, int(height * scale))
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8]))
    pick = random.Random(record_id)
    names, weights = zip(*FACES, strict=True)
    font_name = pick.choices(names, weights=weights)[0]

    ink = Image.new("L", (w, h), 0)  # how much ink each pixel holds, 0..255
    for line in ann.get("valid_line", []):
        for word in line.get("words", []):
            try:
                quad = _quad_points(word["quad"], scale)
                text = str(word["text"])
                _draw_word(ink, text, quad, font_name)
            except (KeyError, TypeError, ValueError) as exc:
                raise BadInput(
                    f"record {record_id!r}: field valid_line[].words[].quad or text invalid ({exc})"
                ) from exc
    for rule in ann.get("repeating_symbol", []):
        for part in rule if isinstance(rule, list) else [rule]:
            try:
                quad = _quad_points(part["quad"], scale)
                qh = max(2.0, quad[3][1] - quad[0][1])
                n = max(1, int((quad[1][0] - quad[0][0]) / (qh * 0.6)))
                _draw_word(ink, (part.get("text") or "-") * n, quad, font_name)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise BadInput(
                    f"record {record_id!r}: field repeating_symbol[].quad invalid ({exc})"
                ) from exc

    paper = thermal_paper(w, h, rng)
    darkness = rng.uniform(0.7, 0.92)  # thermal ink is rarely pure black
    coverage = np.asarray(ink, dtype=np.float32) / 255.0
    fade = 1.0 - rng.uniform(0.0, 0.25) * rng.random((h, w)) ** 4  # patchy print
    page = paper * (1.0 - darkness * coverage * fade)

    # The photo: the paper on a darker surface, tilted and turned a little.
    margin = int(0.06 * max(w, h))
    surface = rng.uniform(0.25, 0.6)
    canvas = np.full((h + 2 * margin, w + 2 * margin), surface, dtype=np.float32)
    canvas += rng.normal(0.0, 0.02, canvas.shape)
    canvas[margin : margin + h, margin : margin + w] = page
    img = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    cw, ch = img.size
    jitter = 0.025
    corners = [(0.0, 0.0), (float(cw), 0.0), (float(cw), float(ch)), (0.0, float(ch))]
    moved = [
        (x + rng.uniform(-jitter, jitter) * cw, y + rng.uniform(-jitter, jitter) * ch)
        for x, y in corners
    ]
    fill = int(surface * 255)
    img = img.transform(
        (cw, ch),
        Image.Transform.PERSPECTIVE,
        _perspective_coeffs(moved, corners),
        Image.Resampling.BICUBIC,
        fillcolor=fill,
    )
    img = img.rotate(rng.uniform(-3.0, 3.0), Image.Resampling.BICUBIC, fillcolor=fill)
    light = _uneven_light(cw, ch, rng)
    arr = np.asarray(img, dtype=np.float32) * light + rng.normal(0.0, 3.0, (ch, cw))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.1)))
    tint = rng.uniform(0.93, 1.0, 3)  # warm or cool white balance
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) * tint
    out = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(rng.integers(45, 90)))
    return buf.getvalue()


def render_photos(
    jobs: Sequence[tuple[dict[str, Any], str]], max_side: int, workers: int | None = None
) -> list[bytes]:
    """`render_photo` of every (annotation, record id), in order, on `workers` threads (default:
    one per core); the bytes are the ones drawn one at a time. A bad record raises its BadInput."""
    n = workers or cores()
    if n <= 1 or len(jobs) < 2:
        return [render_photo(ann, rid, max_side) for ann, rid in jobs]
    with ThreadPoolExecutor(n, thread_name_prefix="render") as pool:
        return list(pool.map(lambda job: render_photo(job[0], job[1], max_side), jobs))
