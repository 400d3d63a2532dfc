"""Confidence and warnings: which tokens count, what is warned about, how the threshold is picked."""

import pytest

from tasks.evaluation.calibration import pick_threshold, warned_split
from tasks.inference.confidence import (
    amounts_not_in_ocr,
    answer_warnings,
    judged,
    token_confidence,
    value_chars,
)
from tasks.inference.generation import Answer
from tests.conftest import small_params


def _inside(text: str) -> str:
    return "".join(c for c, v in zip(text, value_chars(text), strict=True) if v)


def test_only_characters_inside_string_values_count():
    assert _inside('{"total":{"total_price":"10,000"}}') == "10,000"
    assert _inside('{"menu":[{"nm":"A \\"B\\"","cnt":"2"}]}') == 'A \\"B\\"2'
    # cut off inside a value: the rest of it is a value
    assert _inside('{"menu":[{"nm":"ICE COF') == "ICE COF"
    # a key written `"nm" :` (space before the colon) is still a key
    assert _inside('{"nm" : "X"}') == "X"


def test_confidence_is_over_the_value_tokens():
    pieces = ['{"', "total_price", '":"', "10", ",000", '"}']
    logprobs = [-0.01, -0.02, -0.01, -2.0, -1.0, -0.03]
    c = token_confidence(logprobs, pieces)
    assert c == {"mean_logprob": -1.5, "min_logprob": -2.0, "value_tokens": 2}
    # no value at all (`{}`): every token counts
    assert token_confidence([-0.5, -1.5], ["{", "}"]) == {
        "mean_logprob": -1.0,
        "min_logprob": -1.5,
        "value_tokens": 0,
    }
    with pytest.raises(ValueError):
        token_confidence([-1.0], ["a", "b"])


def test_an_amount_missing_from_the_ocr_text_is_named():
    parsed = {
        "menu": [{"nm": "TEA", "price": "12,000"}, {"nm": "CAKE", "price": "9.500"}],
        "total": {"total_price": "21.500", "cashprice": "-"},
    }
    ocr = "TEA 12,000\nCAKE 9,5 00\nTOTAL 21,500"
    # separators and spaces written either way; a name and a dash are not amounts
    assert amounts_not_in_ocr(parsed, ocr) == []
    assert amounts_not_in_ocr(parsed, "TEA 12,000\nTOTAL 21,500") == ["menu[1].price"]


def test_warnings_say_why_an_answer_is_not_to_be_trusted():
    sure = {"mean_logprob": -0.01, "min_logprob": -0.2, "value_tokens": 9}
    unsure = {"mean_logprob": -1.3, "min_logprob": -3.0, "value_tokens": 9}
    parsed = {"total": {"total_price": "7,000"}}
    assert answer_warnings(parsed, True, sure, -0.1, "TOTAL 7,000") == []
    assert answer_warnings(parsed, True, sure, None, None) == []
    found = answer_warnings(parsed, False, unsure, -0.1, "TOTAL 8,000")
    assert [w.split(":")[0] for w in found] == [
        "invalid JSON",
        "low confidence",
        "not in the OCR text",
    ]
    assert "total.total_price" in found[2] and "-1.300 < -0.100" in found[1]


def test_judged_answers_carry_confidence_and_warnings():
    answer = Answer(
        '{"total":{"total_price":"5"}}',
        (-0.1,) * 5,
        ('{"', 'total":{"', 'total_price":"', "5", '"}}'),
    )
    row = judged(answer, "TOTAL 5", -0.5)
    assert row["json"] == {"total": {"total_price": "5"}} and row["valid_json"]
    assert row["confidence"]["value_tokens"] == 1 and row["warnings"] == []


def test_threshold_leaves_the_asked_share_of_the_reference_unwarned():
    p = small_params().evaluate.confidence  # right at F1 0.9, 5 right ones make the reference
    right = [-0.01 * k for k in range(1, 21)]  # 20 right answers, -0.01 .. -0.20
    wrong = [-1.0, -2.0]
    picked = pick_threshold(
        right + wrong, [1.0] * 20 + [0.1, 0.0], p.model_copy(update={"keep": 0.95})
    )
    assert picked["validation_n"] == 22 and picked["validation_right"] == 20
    assert picked["confidence_basis"] == 1
    t = picked["confidence_threshold"]
    assert sum(c >= t for c in right) == 19  # 95 % of the right ones
    assert all(c < t for c in wrong)


def test_too_few_right_answers_make_every_answer_the_reference():
    p = small_params().evaluate.confidence.model_copy(update={"min_right": 5, "keep": 0.9})
    confidences = [-0.1 * k for k in range(1, 11)]  # -0.1 .. -1.0, one right
    picked = pick_threshold(confidences, [1.0] + [0.2] * 9, p)
    assert picked["confidence_basis"] == 0 and picked["validation_right"] == 1
    assert sum(c >= picked["confidence_threshold"] for c in confidences) == 9
    assert pick_threshold([], [], p)["confidence_threshold"] == 0.0


def test_warned_split_compares_warned_and_unwarned_answers():
    s = warned_split([1.0, 0.8, 0.1, 0.0], [False, False, True, True])
    assert s == {"warned_rate": 0.5, "f1_warned": 0.05, "f1_unwarned": 0.9}
    assert warned_split([1.0], [False])["f1_warned"] is None
