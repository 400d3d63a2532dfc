"""Receipt rendering helpers shared by the synthetic generator and the CORD-annotation renderer."""

from __future__ import annotations

import io
import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same glyphs on every machine, no system fonts needed."""
    return ImageFont.load_default(size=max(6, int(size)))


def paper(width: int, height: int, rng: random.Random) -> Image.Image:
    """An off-white, faintly speckled background, like thermal paper in a photo."""
    tone = rng.randint(232, 250)
    img = Image.new("L", (width, height), tone)
    draw = ImageDraw.Draw(img)
    for _ in range(width * height // 400):
        x, y = rng.randrange(width), rng.randrange(height)
        draw.point((x, y), fill=tone - rng.randint(10, 40))
    return img.convert("RGB")


def draw_text_in_box(
    img: Image.Image, text: str, box: tuple[int, int, int, int], ink: int = 30
) -> None:
    """Draw text stretched to fill an axis-aligned box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    f = font(h)
    left, top, right, bottom = f.getbbox(text)
    tw, th = max(1, int(right - left)), max(1, int(bottom - top))
    glyphs = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(glyphs).text((-int(left), -int(top)), text, font=f, fill=255)
    glyphs = glyphs.resize((w, h), Image.Resampling.BILINEAR)
    img.paste(Image.new("RGB", (w, h), (ink, ink, ink)), (x0, y0), glyphs)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
