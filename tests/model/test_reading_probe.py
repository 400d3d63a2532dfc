"""The #10 reading probe (bench/reading_probe.py) runs end to end at toy size."""

import argparse
import random
import shlex

from bench.reading_probe import main, page


def test_grid_pages_hold_their_text_in_reading_order():
    a = argparse.Namespace(layout="grid", content="words", image_size=128)
    img, text = page(random.Random(0), 5, a)
    assert img.size == (128, 128)  # native resolution: no resize blurs the glyph cells
    assert len(text.splitlines()) == 5 and all(text.splitlines())


def test_probe_trains_and_reports_held_out_reading(capsys):
    main(
        shlex.split(
            "--content char --layout grid --image-size 32 --vision-hidden 32 --vision-layers 1 "
            "--text-hidden 32 --text-layers 1 --vocab 300 --steps 20 --eval-every 20 "
            "--max-lines 1 --eval-lines 1 --batch-size 4"
        )
    )
    out = capsys.readouterr().out
    assert "step 20 lines<=1 loss" in out and "eval step 20" in out and "char similarity" in out
