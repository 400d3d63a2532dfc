"""A seeded, deterministic generator of CORD-v2-shaped receipts, rendered with PIL.

The embedded default data source: no downloads, same bytes for the same params.
"""

from __future__ import annotations

import json
import random
from typing import Any

from PIL import Image, ImageDraw

from tasks.config import SyntheticParams
from tasks.receipt_json import to_target
from tasks.sources import RawRecord
from tasks.sources.render import font, paper, png_bytes

MENU_NAMES = [
    "ICE BLACKCOFFE",
    "AVOCADO COFFEE",
    "CHIKEN KATSU",
    "NASI GORENG",
    "MIE AYAM",
    "ES TEH MANIS",
    "KOPI SUSU",
    "TEH TARIK",
    "ROTI BAKAR",
    "SATE AYAM",
    "BAKSO SAPI",
    "AYAM GEPREK",
    "LEMON TEA",
    "MATCHA LATTE",
    "CHOCO CAKE",
    "FRENCH FRIES",
    "NASI UDUK",
    "SOTO BETAWI",
    "PISANG GORENG",
    "JUS ALPUKAT",
    "CAPPUCCINO",
    "AMERICANO",
    "CROISSANT",
    "DIMSUM",
]
STORES = ["WARUNG SEDERHANA", "KOPI KENANGAN", "CAFE NUSANTARA", "RESTO BAHAGIA", "TOKO ROTI"]


def fmt(amount: int) -> str:
    """CORD's way of writing rupiah: thousands separated by commas ('25,000')."""
    return f"{amount:,}"


def make_gt_parse(rng: random.Random, max_items: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw one receipt: its gt_parse and what the renderer needs besides."""
    items = []
    for name in rng.sample(MENU_NAMES, rng.randint(1, max_items)):
        cnt = rng.randint(1, 3)
        unit = rng.randint(10, 190) * 500
        item: dict[str, Any] = {"nm": name, "cnt": str(cnt), "price": fmt(cnt * unit)}
        if cnt > 1 and rng.random() < 0.5:
            item["unitprice"] = fmt(unit)
        items.append(item)
    subtotal = sum(int(i["price"].replace(",", "")) for i in items)
    sub_total: dict[str, Any] = {"subtotal_price": fmt(subtotal)}
    extra = 0
    if rng.random() < 0.5:
        service = subtotal * 5 // 100
        sub_total["service_price"] = fmt(service)
        extra += service
    if rng.random() < 0.6:
        tax = subtotal // 10
        sub_total["tax_price"] = fmt(tax)
        extra += tax
    total_amount = subtotal + extra
    total: dict[str, Any] = {"total_price": fmt(total_amount)}
    if rng.random() < 0.7:
        step = rng.choice([50_000, 100_000])
        cash = -(-total_amount // step) * step
        total["cashprice"] = fmt(cash)
        total["changeprice"] = fmt(cash - total_amount)
    gt: dict[str, Any] = {"menu": items[0] if len(items) == 1 else items}
    if len(sub_total) > 1 or rng.random() < 0.5:
        gt["sub_total"] = sub_total
    gt["total"] = total
    return gt, {"store": rng.choice(STORES), "items": items}


def render(
    gt: dict[str, Any], store: str, items: list[dict[str, Any]], width: int, rng: random.Random
) -> Image.Image:
    """Lay the receipt out line by line: store, items, totals; font size and layout vary."""
    size = rng.randint(13, 19)
    f = font(size)
    line_h = int(size * 1.45)
    two_line_items = rng.random() < 0.4  # "NAME" then "2 x 15,000   30,000" on its own line
    lines: list[tuple[str, str]] = [(store, "")]
    lines.append(("-" * 40, ""))
    for it in items:
        if two_line_items:
            lines.append((it["nm"], ""))
            unit = it.get("unitprice", "")
            lines.append((f"  {it['cnt']} x {unit}" if unit else f"  {it['cnt']}", it["price"]))
        else:
            lines.append((f"{it['cnt']} {it['nm']}", it["price"]))
    lines.append(("-" * 40, ""))
    labels = {
        "subtotal_price": "SUBTOTAL",
        "service_price": "SERVICE",
        "tax_price": "TAX 10%",
        "total_price": "TOTAL",
        "cashprice": "CASH",
        "changeprice": "CHANGE",
    }
    for group in ("sub_total", "total"):
        for key, value in gt.get(group, {}).items():
            lines.append((labels[key], value))
    margin = rng.randint(8, 24)
    height = margin * 2 + line_h * (len(lines) + 1)
    img = paper(width, height, rng)
    draw = ImageDraw.Draw(img)
    y = margin
    for left, right in lines:
        if left.startswith("-"):
            draw.line((margin, y + line_h // 2, width - margin, y + line_h // 2), fill=(90, 90, 90))
        else:
            draw.text((margin, y), left, font=f, fill=(25, 25, 25))
            if right:
                w = draw.textlength(right, font=f)
                draw.text((width - margin - w, y), right, font=f, fill=(25, 25, 25))
        y += line_h
    return img


def generate(p: SyntheticParams) -> list[RawRecord]:
    """All splits of synthetic receipts; one RNG per record so sizes don't reshuffle content."""
    records = []
    for split, n in (("train", p.train), ("validation", p.validation), ("test", p.test)):
        for i in range(n):
            rng = random.Random(f"{p.seed}-{split}-{i}")
            gt, extra = make_gt_parse(rng, p.max_items)
            img = render(gt, extra["store"], extra["items"], p.width, rng)
            rid = f"synthetic-{split}-{i:05d}"
            ground_truth = {
                "gt_parse": json.loads(to_target(gt)),
                "meta": {
                    "version": "2.0.0",
                    "split": split,
                    "image_id": i,
                    "image_size": {"width": img.width, "height": img.height},
                },
            }
            records.append(RawRecord(rid, split, png_bytes(img), json.dumps(ground_truth)))
    return records
