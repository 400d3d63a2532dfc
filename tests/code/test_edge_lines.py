"""bench.edge_lines: CORD's annotated words put through the OCR frame rule, as the engine
would have boxed them."""

import json

from bench.edge_lines import edge_cuts


def _word(text, x0, y0, x1, y1):
    return {
        "text": text,
        "quad": {"x1": x0, "y1": y0, "x2": x1, "y2": y0, "x3": x1, "y3": y1, "x4": x0, "y4": y1},
    }


def _row(name, lines):
    ann = {
        "meta": {"image_size": {"width": 300, "height": 400}},
        "valid_line": [{"category": c, "words": [_word(*w) for w in ws]} for c, ws in lines],
    }
    return {"split": "dev", "name": name, "ground_truth": json.dumps(ann)}


def test_counts_the_labelled_words_on_lines_the_edge_cuts():
    clear = _row("receipt_1", [("menu.nm", [("EGG", 40, 100, 80, 120)])])
    edge = _row(
        "receipt_2",
        [
            ("menu.nm", [("TART", 40, 100, 80, 120)]),
            ("total.total_price", [("13,000", 230, 385, 298, 398)]),  # alone at the bottom-right
            # a cut price beside a clear key word stays
            ("total.cashprice", [("CASH", 40, 200, 90, 220), ("20,00", 250, 200, 299, 220)]),
        ],
    )
    exact = edge_cuts([clear, edge], grow=0)
    assert exact["labelled_words"] == 5 and exact["words_left_out"] == 1
    assert exact["totals_left_out"] == 1
    assert exact["receipts_left_out_from"] == ["dev/receipt_2"]
    assert exact["words_at_edge"] == 2  # by word, the cut price beside CASH would go too
    # grown by 3 px, the box of a word 2 px in reaches the edge too
    near = _row("receipt_3", [("menu.price", [("9,000", 2, 50, 40, 70)])])
    assert edge_cuts([near], grow=0)["words_left_out"] == 0
    assert edge_cuts([near], grow=3)["words_left_out"] == 1
