"""Background text in the OCR lines: what a photo of a receipt on a table adds to its reading.

A photographed receipt lies on something: a table, a menu, a bag, another receipt. The OCR
engine reads that too, so a real photo's OCR lines often start (or end) with short fragments
that belong to no receipt line (`15C:1`, `atuakaill`, `Galo`). CORD's renders are the receipt
alone, so a model trained on them has never seen such lines. `with_background` adds a few,
seeded, above and below the receipt's own lines; at training (`train.ocr_background`) it
teaches the model to pass over them, and `bench.ocr_background` measures how much they cost.
"""

from __future__ import annotations

import random
import string

# Fragments mix letters, digits and the punctuation OCR makes of texture and stray print.
_CHARS = string.ascii_letters + string.digits + ":.,-'/()"


def background_line(rng: random.Random) -> str:
    """One line of background: one to three fragments of 1 to 10 characters."""
    words = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:  # a word-like fragment
            word = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(2, 10)))
        else:  # a mixed fragment
            word = "".join(rng.choice(_CHARS) for _ in range(rng.randint(1, 6)))
        words.append(word)
    return " ".join(words)


def with_background(ocr: str, rng: random.Random, max_lines: int) -> str:
    """`ocr` with 1 to `max_lines` background lines: above it, below it, or both."""
    n = rng.randint(1, max_lines)
    lines = [background_line(rng) for _ in range(n)]
    where = rng.random()
    if where < 0.6:
        above, below = lines, []
    elif where < 0.8:
        above, below = [], lines
    else:
        cut = rng.randint(0, n)
        above, below = lines[:cut], lines[cut:]
    return "\n".join([*above, *([ocr] if ocr else []), *below])
