"""A seeded, deterministic generator of CORD-v2-shaped receipts, printed like a thermal slip.

Each receipt is printed with Pillow's bundled monospaced bitmap font on a grid of 12-px
character cells (`columns` wide plus a one-cell right margin, `rows` tall), as a thermal
printer prints, with its amounts right-aligned.

The embedded default data source: no downloads, same bytes for the same params.
"""

from __future__ import annotations

import json
import random
from typing import Any

from PIL import Image

from tasks.core.config import SyntheticParams
from tasks.data.receipt_json import to_target
from tasks.data.sources import RawRecord
from tasks.data.sources.render import png_bytes, print_lines

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
STORES = ["WARUNG SEDERHAN", "KOPI KENANGAN", "CAFE NUSANTARA", "RESTO BAHAGIA", "TOKO ROTI"]


def fmt(amount: int) -> str:
    """CORD's way of writing rupiah: thousands separated by commas ('25,000')."""
    return f"{amount:,}"


def make_gt_parse(rng: random.Random, max_items: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw one receipt: its gt_parse and what the renderer needs besides."""
    items = []
    for name in rng.sample(MENU_NAMES, rng.randint(1, max_items)):
        cnt = rng.randint(1, 3)
        unit = rng.randint(10, 99_000 // (cnt * 500)) * 500  # a line price fits 6 characters
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


LABELS = {
    "subtotal_price": "SUBTTL",
    "service_price": "SERVICE",
    "tax_price": "TAX 10%",
    "total_price": "TOTAL",
    "cashprice": "CASH",
    "changeprice": "CHANGE",
}


def slip_lines(
    gt: dict[str, Any], store: str, items: list[dict[str, Any]], cols: int, rng: random.Random
) -> list[str]:
    """The receipt as a thermal printer prints it: `cols`-character lines, amounts right-aligned."""

    def row(left: str, right: str = "") -> str:
        if len(left) + len(right) + (1 if right else 0) > cols:
            raise ValueError(f"{left!r} + {right!r} does not fit a {cols}-column line")
        return left.ljust(cols - len(right)) + right

    lines = [row(store), "-" * cols]
    for it in items:
        unit = it.get("unitprice")
        one_line = f"{it['cnt']} {it['nm']}"
        if not unit and len(one_line) + 1 + len(it["price"]) <= cols and rng.random() < 0.5:
            lines.append(row(one_line, it["price"]))
        else:  # "NAME" then "2x15,000  30,000" on its own line
            lines.append(row(it["nm"]))
            lines.append(row(f"{it['cnt']}x{unit}" if unit else f"  {it['cnt']}", it["price"]))
    lines.append("-" * cols)
    for group in ("sub_total", "total"):
        for key, value in gt.get(group, {}).items():
            lines.append(row(LABELS[key], value))
    return lines


def render(
    gt: dict[str, Any],
    store: str,
    items: list[dict[str, Any]],
    p: SyntheticParams,
    rng: random.Random,
) -> Image.Image:
    """Print the receipt from the top of a (columns + 1) x rows slip, one glyph per 12-px cell;
    the last column is the right margin."""
    lines = slip_lines(gt, store, items, p.columns, rng)
    return print_lines(lines, p.columns + 1, p.rows, 0, rng)


def generate(p: SyntheticParams) -> list[RawRecord]:
    """All splits of synthetic receipts; one RNG per record so sizes don't reshuffle content."""
    records = []
    for split, n in (("train", p.train), ("validation", p.validation), ("test", p.test)):
        for i in range(n):
            rng = random.Random(f"{p.seed}-{split}-{i}")
            gt, extra = make_gt_parse(rng, p.max_items)
            img = render(gt, extra["store"], extra["items"], p, rng)
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
