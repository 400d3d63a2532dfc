"""Receipt rendering for the synthetic generator: thermal-printed slips in a bitmap font."""

from __future__ import annotations

import io
import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


def paper(width: int, height: int, rng: random.Random) -> Image.Image:
    """An off-white, faintly speckled background, like thermal paper in a photo."""
    tone = rng.randint(232, 250)
    img = Image.new("L", (width, height), tone)
    draw = ImageDraw.Draw(img)
    for _ in range(width * height // 400):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.point((x, y), fill=tone - rng.randint(10, 40))
    return img.convert("RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# Thermal print: one monospaced glyph per CELL x CELL square, on a grid of whole cells. The
# tiny base's patch size is CELL, so each image patch holds exactly one printed character.
CELL = 12


@lru_cache(maxsize=256)
def thermal_glyph(char: str) -> Image.Image:
    """One character of Pillow's bundled 6x11 bitmap font, printed double-width in a cell (mask)."""
    g = Image.new("L", (6, CELL), 0)
    ImageDraw.Draw(g).text((0, 0), char, font=ImageFont.load_default_imagefont(), fill=255)
    return g.resize((CELL, CELL), Image.Resampling.NEAREST)


def print_lines(
    lines: list[str], cols: int, rows: int, top: int, rng: random.Random
) -> Image.Image:
    """Print `lines` (each at most `cols` characters) from cell row `top` of a cols x rows slip."""
    if len(lines) + top > rows or any(len(line) > cols for line in lines):
        raise ValueError(f"{len(lines)} lines from row {top} do not fit a {cols}x{rows} slip")
    img = paper(cols * CELL, rows * CELL, rng)
    ink = rng.randint(15, 60)
    for r, line in enumerate(lines, start=top):
        for c, char in enumerate(line):
            if char != " ":
                img.paste((ink, ink, ink), (c * CELL, r * CELL), thermal_glyph(char))
    return img
