"""OCR grounding: the packaged engine reads a rendered CORD receipt, offline, into lines that
keep the printed layout; the cache stands in for the engine by image hash."""

import io
import json
import socket
import threading
from pathlib import Path

import pytest
from PIL import Image

from tasks.data.receipt_json import derive_gt_parse
from tasks.data.sources import cord
from tasks.data.sources.photo import render_photo
from tasks.inference import ocr
from tasks.inference.ocr import OcrCache, Word, layout_lines
from tasks.model.modeling import instruction
from tests.conftest import CORD_SAMPLE, REPO, needs


def receipt(index: int = 0) -> tuple[bytes, dict]:
    row = cord.read_annotations(REPO / cord.SHIPPED)[index]
    ann = json.loads(row["ground_truth"])
    return render_photo(ann, f"cord-{row['split']}-{row['name']}", 1280), ann


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("OCR tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_ocr_reads_a_rendered_receipts_total_offline_from_the_wheels_models(no_network):
    data, ann = receipt(1)
    total = derive_gt_parse(ann["valid_line"])["total"]["total_price"]
    text = ocr.ocr_text(Image.open(io.BytesIO(data)))
    assert total in text
    # the engine's ONNX models are files of the installed wheel
    import rapidocr

    eng = ocr._engine()
    models = [Path(m.session.session._model_path) for m in (eng.text_det, eng.text_rec)]
    wheel = Path(rapidocr.__file__).parent
    assert all(m.is_file() and wheel in m.parents for m in models), models


def test_lines_are_grouped_by_baseline_and_read_left_to_right():
    def word(text, x0, y0, x1, y1):
        return Word(text, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), 1.0)

    words = [
        word("82,000", 300, 101, 360, 121),
        word("ICE", 10, 100, 40, 120),
        word("TOTAL", 10, 150, 60, 171),
        word("BLACKCOFFE", 50, 99, 150, 119),
        word("174,600", 300, 152, 370, 172),
        word("2", 200, 102, 210, 122),
    ]
    assert layout_lines(words) == ["ICE BLACKCOFFE 2 82,000", "TOTAL 174,600"]
    assert layout_lines([]) == []

    # the same page turned by 6 degrees: the right end of a line sits lower than the next
    # line's left end, yet each line stays whole
    import math

    a = math.radians(6)

    def turned(w):
        pts = tuple(
            (x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a))
            for x, y in w.quad
        )
        return Word(w.text, pts, 1.0)

    lines = [
        [
            word("CHIKEN", 10, 100, 80, 120),
            word("KATSU", 90, 100, 150, 120),
            word("51,000", 400, 100, 470, 120),
        ],
        [word("SUB_TOTAL", 10, 130, 110, 150), word("194,000", 400, 130, 480, 150)],
    ]
    assert layout_lines([turned(w) for line in lines for w in line]) == [
        "CHIKEN KATSU 51,000",
        "SUB_TOTAL 194,000",
    ]


def test_the_prompt_carries_the_ocr_lines_after_the_instruction():
    assert instruction("Extract.", None) == "Extract."  # no grounding
    assert instruction("Extract.", "A 1\nB 2") == "Extract.\nOCR:\nA 1\nB 2"
    assert instruction("Extract.", "") == "Extract.\nOCR:\n"  # grounding that found nothing


def test_lines_the_images_edge_cuts_are_left_out_of_the_text():
    def word(text, x0, y0, x1, y1):
        return Word(text, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), 1.0)

    inside = [word("TOTAL", 40, 100, 90, 120), word("174,600", 200, 100, 280, 120)]
    cut = [
        word("Galo", 0, 30, 30, 50),  # left edge
        word("15C:1", 50, 0, 90, 20),  # top edge
        word("Rma", 280, 150, 299, 170),  # right edge of a 300 px wide image
        word("lep", 100, 380, 140, 399),  # bottom edge of a 400 px tall image
    ]
    size = (300, 400)
    assert ocr.ocr_read(inside + cut, size) == ("TOTAL 174,600", 4)
    # a price the edge cuts, on a line with words clear of it, is the receipt's own
    tight = [word("CASH", 40, 200, 90, 220), word("200,00", 240, 200, 299, 220)]
    assert ocr.ocr_read(inside + tight, size) == ("TOTAL 174,600\nCASH 200,00", 0)
    assert ocr.ocr_read([word("CASH", 3, 3, 40, 20)], size) == ("CASH", 0)  # 3 px in
    assert ocr.ocr_read(cut, None) == (ocr.as_text(cut), 0)  # no size known: all kept


@needs(CORD_SAMPLE)
@pytest.mark.real_data
def test_the_real_photos_text_starts_at_the_receipt_not_the_notebook_beside_it():
    """The real CORD photo lies on a notebook whose handwriting runs off the picture's left
    edge; those words are left out, at predict (from the image) and ingest (from the bytes)."""
    data = (CORD_SAMPLE / "images" / "cord_tst_receipt_00004.png").read_bytes()
    image = Image.open(io.BytesIO(data))
    words = ocr.read_words(image)
    text, left_out = ocr.ocr_read(words, image.size)
    assert left_out > 0 and "BLACKCOFFE" in text.splitlines()[0]
    assert "TOTAL 174,600" in text and "\n" + "CASH 200,000" in text
    assert ocr.ocr_text(image) == text == ocr.read_many(OcrCache(None), [data], workers=1)[0]
    assert ocr.as_text(words).splitlines()[0] != text.splitlines()[0]  # read whole, it began above


def test_the_cache_answers_by_image_hash_and_engine(tmp_path, monkeypatch):
    """Words are cached, lines laid out on reading."""
    data, _ = receipt(2)
    blank = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(blank, format="PNG")
    cache = OcrCache(tmp_path / "ocr.jsonl.gz")
    texts = ocr.read_many(cache, [data, blank.getvalue()], workers=1)
    assert cache.misses == 2 and texts[1] == ""  # nothing on a blank page
    cache.save()
    again = OcrCache(tmp_path / "ocr.jsonl.gz")

    def engine_called(*a, **k):
        raise AssertionError("a cached image was read again")

    monkeypatch.setattr(ocr, "read_words", engine_called)
    assert ocr.read_many(again, [data, blank.getvalue()], workers=1) == texts
    assert again.misses == 0
    monkeypatch.setattr(ocr, "engine_id", lambda: "another-engine")
    assert OcrCache(tmp_path / "ocr.jsonl.gz").entries == {}  # another engine reads anew


def test_several_receipts_are_read_on_worker_threads_into_the_same_text(monkeypatch):
    """predict, serving, scoring and ingest read a batch of images on one thread per core,
    each with its own one-thread engine: the text is what reading one at a time gives."""
    data = [receipt(i)[0] for i in (0, 1, 2)]
    images = [Image.open(io.BytesIO(d)) for d in data]
    one_by_one = [ocr.ocr_text(im) for im in images]
    engines: list[int] = []
    new_engine = ocr._new_engine

    def counted(threads: int):
        engines.append(threads)
        return new_engine(threads)

    monkeypatch.setattr(ocr, "_new_engine", counted)
    monkeypatch.setattr(ocr, "_worker", threading.local())  # engines made afresh for this test

    assert ocr.ocr_texts(images, workers=2) == one_by_one
    assert 1 <= len(engines) <= 2 and set(engines) == {1}  # pool threads' own one-thread engines
    assert ocr.read_many(OcrCache(None), data, workers=2) == one_by_one  # ingest's misses alike
    assert all(t.count("\n") > 5 for t in one_by_one)  # receipts, not empty pages


def test_the_shipped_cache_covers_the_shipped_renders():
    """A fresh clone's ingest reads OCR from the shipped cache: spot-check that its entries are
    the renders of this code (by hash) and what the engine reads on them."""
    cache = OcrCache(REPO / "assets" / "cord" / "ocr.jsonl.gz")
    assert len(cache.entries) == 900
    data, _ = receipt(0)
    key = ocr.image_sha256(data)
    assert key in cache.entries
    cached = [w.as_row() for w in cache.entries[key]]  # as stored: 0.1 px, 4 decimals
    assert cached == [w.as_row() for w in ocr.read_words(Image.open(io.BytesIO(data)))]


def test_background_lines_surround_the_receipts_own_lines_and_repeat_by_seed():
    import random

    from tasks.data.augment import with_background

    text = "1 EGG TART 13,000\nTOTAL 13,000\nCASH 20,000"
    own = text.splitlines()
    places = set()
    for seed in range(300):
        out = with_background(text, random.Random(seed), max_lines=5).splitlines()
        start = next(i for i in range(len(out)) if out[i : i + len(own)] == own)
        above, below = out[:start], out[start + len(own) :]
        assert 1 <= len(above) + len(below) <= 5  # the receipt's lines intact, in order
        assert all(line.strip() for line in above + below)
        places.add((bool(above), bool(below)))
        assert out == with_background(text, random.Random(seed), 5).splitlines()
    assert places == {(True, False), (False, True), (True, True)}
    assert with_background("", random.Random(0), 3).strip()  # a reading that found nothing
