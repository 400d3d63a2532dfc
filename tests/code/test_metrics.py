from typing import Any

import pytest

from tasks.evaluation.metrics import (
    f1,
    field_counts,
    flatten,
    normalize,
    per_field,
    score,
    ted,
    ted_accuracy,
)

GT: dict[str, Any] = {
    "menu": [{"nm": "ICE", "price": "82,000"}, {"nm": "TEA", "price": "5,000"}],
    "total": {"total_price": "87,000"},
}


def test_normalize_wraps_scalars_drops_empties_and_sorts_keys():
    assert normalize(
        {"total": {"total_price": "5", "etc": {}}, "menu": {"nm": " A "}, "void_menu": []}
    ) == {"menu": [{"nm": ["A"]}], "total": [{"total_price": ["5"]}]}
    assert list(normalize({"total": {}, "menu": {"price": "1", "nm": "a"}})["menu"][0]) == [
        "nm",
        "price",
    ]


def test_normalize_drops_falsy_values_like_donut():
    # Donut's normalize_dict starts with `if not data: return {}`: "", None, 0 and False vanish
    # with their key; a blank-but-truthy " " survives as [""] (it is stripped after the test).
    gt = {"menu": {"nm": "A", "cnt": "", "price": None, "num": " "}, "total": {"total_price": 0}}
    assert normalize(gt) == {"menu": [{"nm": ["A"], "num": [""]}]}
    assert normalize({"total": {"cashprice": False, "changeprice": True}}) == {
        "total": [{"changeprice": ["True"]}]
    }


def test_normalize_keeps_only_exact_str_int_float_items_in_lists():
    # `type(item) in {str, int, float}`: booleans (an int subclass) and None are dropped,
    # 0 inside a list is kept (only whole values are tested for falsiness), blanks are dropped.
    assert normalize({"etc": ["a", True, 0, 2.5, None, " ", False]}) == {"etc": ["a", "0", "2.5"]}


def test_leaf_marker_is_matched_anywhere_in_the_label():
    # Donut tests `"<leaf>" in label`: a key holding the marker is costed as a leaf too.
    # gt tree: <root> -> "k<leaf>ey" (a leaf of text "key": 3) -> <leaf>ab (2): TED({}, gt) = 5.
    # With a prefix test the key would be an inner node costing 1: TED would be 3.
    gt = {"k<leaf>ey": "ab"}
    assert ted(normalize({}), normalize(gt)) == 5
    assert ted_accuracy({"k<leaf>ey": "ab"}, gt) == 1.0
    assert ted_accuracy({"k<leaf>ey": "ax"}, gt) == pytest.approx(1 - 1 / 5)


def test_empty_ground_truth_scores_without_dividing_by_zero():
    # Donut raises ZeroDivisionError here; we score an empty answer 1 and any other 0.
    assert ted_accuracy({}, {"menu": {"nm": ""}}) == 1.0
    assert ted_accuracy({"menu": {"nm": "A"}}, {}) == 0.0


def test_ted_accuracy_bounds():
    assert ted_accuracy(GT, GT) == 1.0
    assert ted_accuracy({}, GT) == 0.0
    assert ted_accuracy({"x": "y" * 500}, GT) == 0.0  # clipped at 0


def test_ted_accuracy_hand_computed_single_leaf_edit():
    # Normalised tree: <root> -> total -> <subtree> -> total_price -> leaf "87,000" (6 chars).
    # TED({}, gt) = 3 inner nodes (1 each) + 6 for the leaf = 9; changing one digit costs 1.
    gt = {"total": {"total_price": "87,000"}}
    assert ted_accuracy({"total": {"total_price": "88,000"}}, gt) == pytest.approx(1 - 1 / 9)


def test_ted_accuracy_list_handling_is_order_sensitive_like_donut():
    swapped = {"menu": list(reversed(GT["menu"])), "total": GT["total"]}
    assert 0.0 < ted_accuracy(swapped, GT) < 1.0
    # a one-item menu as a dict normalises to the same tree as a one-item list
    assert ted_accuracy({"menu": {"nm": "ICE"}}, {"menu": [{"nm": "ICE"}]}) == 1.0


def test_field_f1_counts_multiset_matches():
    pred = {"menu": [{"nm": "ICE", "price": "82,000"}], "total": {"total_price": "1"}}
    assert flatten(normalize(pred)) == [
        ("menu.nm", "ICE"),
        ("menu.price", "82,000"),
        ("total.total_price", "1"),
    ]
    tp, fp, fn = field_counts(pred, GT)
    assert (tp, fp, fn) == (2, 1, 3)
    assert f1(tp, fp, fn) == pytest.approx(2 / (2 + 4 / 2))
    assert f1(0, 0, 0) == 0.0


def test_score_on_truncated_empty_and_perfect_outputs():
    from tasks.data.receipt_json import to_target

    perfect = to_target(GT)
    truncated = perfect[:30]  # '{"menu":[{"nm":"ICE","price":"' : invalid JSON, partly scorable
    m = score([perfect, truncated, ""], [GT, GT, GT])
    assert m["json_valid_rate"] == pytest.approx(1 / 3)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert 1 / 3 < m["ted_accuracy"] < 2 / 3
    assert 0 < m["field_f1"] < 1
    assert m["total_price_exact"] == pytest.approx(1 / 3)  # only the perfect one has a total
    assert m["distinct_answers"] == 1.0  # three different outputs for three receipts
    same = score([perfect, perfect], [GT, {"total": {"total_price": "1"}}])
    assert same["distinct_answers"] == 0.5 and same["total_price_exact"] == 0.5


def test_per_field_breakdown():
    out = per_field([{"total": {"total_price": "87,000"}}], [GT])
    assert out["total.total_price"] == {"tp": 1, "fp": 0, "fn": 0, "f1": 1.0}
    assert out["menu.nm"]["fn"] == 2 and out["menu.nm"]["f1"] == 0.0
