import json

import pytest

from tasks.data.receipt_json import (
    derive_gt_parse,
    is_valid_json,
    parse_price,
    parse_target,
    price_violations,
    schema_violations,
    to_target,
    type_violations,
)
from tests.conftest import CORD_JSON, CORD_SAMPLE, SAMPLE_GT_PARSE, needs


def word(text, row=1, key=0):
    return {
        "text": text,
        "is_key": key,
        "row_id": row,
        "quad": {"x1": 0, "y1": 0, "x2": 10, "y2": 0, "x3": 10, "y3": 10, "x4": 0, "y4": 10},
    }


def line(category, group, *words):
    return {"category": category, "group_id": group, "words": list(words)}


def test_canonical_target_is_compact_and_schema_ordered():
    gt = {
        "total": {"cashprice": "50,000", "total_price": "23,000"},
        "menu": {"price": "23,000", "nm": "KOPI"},
    }
    assert (
        to_target(gt)
        == '{"menu":{"nm":"KOPI","price":"23,000"},"total":{"total_price":"23,000","cashprice":"50,000"}}'
    )


def test_target_keeps_nested_lists_and_non_ascii():
    gt = {"menu": [{"nm": "Café", "sub": [{"nm": "a"}, {"nm": "b"}]}, {"nm": "X"}]}
    text = to_target(gt)
    assert "Café" in text
    assert parse_target(text) == gt


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"menu":{"nm":"ICE"}}', {"menu": {"nm": "ICE"}}),
        ('junk {"total":{"total_price":"5"}} trailing', {"total": {"total_price": "5"}}),
        ('{"menu":{"nm":"ICE BL', {"menu": {"nm": "ICE BL"}}),  # cut inside a string
        ('{"menu":{"nm":"ICE","cn', {"menu": {"nm": "ICE"}}),  # cut inside a key
        ('{"menu":[{"nm":"A"},{"nm":', {"menu": [{"nm": "A"}, {}]}),  # cut before a value
        ('{"total":{"total_price":"5",', {"total": {"total_price": "5"}}),  # dangling comma
        ("no json at all", {}),
        ("", {}),
    ],
)
def test_parse_target_tolerates_truncated_and_malformed_output(text, expected):
    assert parse_target(text) == expected


def test_is_valid_json_only_for_one_complete_object():
    assert is_valid_json('{"a":"1"}')
    assert not is_valid_json('{"a":"1"')
    assert not is_valid_json('["a"]')
    assert not is_valid_json('{"a":"1"} extra')


@pytest.mark.parametrize(
    "text,value",
    [
        ("25,000", 25000),
        ("Rp 1.250.000", 1250000),
        ("12.50", 12.5),
        ("-19,400", -19400),
        ("19,400-", -19400),
        ("(1,000)", -1000),
        ("[25,000]", 25000),
        ("40,000.", 40000),
        ("7", 7),
    ],
)
def test_parse_price(text, value):
    assert parse_price(text) == value


@pytest.mark.parametrize("text", ["TOTAL 47,499", "-", "10% 4,818", "abc", ""])
def test_parse_price_rejects_non_numbers(text):
    with pytest.raises(ValueError, match="not a price"):
        parse_price(text)


def test_price_and_schema_violations_name_the_field():
    gt = {
        "menu": [{"nm": "A", "price": "-5,000"}, {"nm": "B", "price": "x"}],
        "sub_total": {"discount_price": "-1,000"},
        "total": {"bogus": "1"},
    }
    assert price_violations(gt) == [
        "menu[0].price='-5,000' (negative)",
        "menu[1].price='x' (not a number)",
    ]
    assert schema_violations(gt) == ["total.bogus"]
    assert schema_violations({"menu": {"nm": "A", "sub": {"nm": "b", "color": "red"}}}) == [
        "menu.sub.color"
    ]


def test_derivation_groups_items_drops_key_words_and_builds_sub_entries():
    valid_line = [
        line("menu.nm", 1, word("NASI", row=1), word("GORENG", row=2)),  # a name over two rows
        line("menu.cnt", 1, word("2")),
        line("menu.price", 1, word("50,000")),
        line("menu.sub_nm", 1, word("EXTRA"), word("EGG")),
        line("menu.sub_price", 1, word("5,000")),
        line("menu.sub_nm", 1, word("NO"), word("ICE")),  # a second sub entry
        line("menu.nm", 2, word("TEH")),
        line("menu.price", 2, word("8,000")),
        line("sub_total.tax_price", 3, word("TAX", key=1), word("5,800")),
        line("sub_total.etc", 3, word("A")),
        line("sub_total.etc", 3, word("B")),  # repeated field -> list
        line("total.total_price", 4, word("TOTAL", key=1), word("63,800")),
        line("total.cashprice", 4, word("CASH", key=1)),  # only a key word: no value
    ]
    assert derive_gt_parse(valid_line) == {
        "menu": [
            {
                "nm": "NASI GORENG",
                "cnt": "2",
                "price": "50,000",
                "sub": [{"nm": "EXTRA EGG", "price": "5,000"}, {"nm": "NO ICE"}],
            },
            {"nm": "TEH", "price": "8,000"},
        ],
        "sub_total": {"tax_price": "5,800", "etc": ["A", "B"]},
        "total": {"total_price": "63,800"},
    }


def test_derivation_one_item_menu_is_a_dict():
    gt = derive_gt_parse(
        [
            line("menu.nm", 7, word("KOPI")),
            line("menu.price", 7, word("23,000")),
            line("total.total_price", 8, word("23,000")),
        ]
    )
    assert gt == {"menu": {"nm": "KOPI", "price": "23,000"}, "total": {"total_price": "23,000"}}


def test_derivation_rejects_a_category_without_group():
    with pytest.raises(ValueError, match=r"valid_line\[0\]\.category"):
        derive_gt_parse([line("menu", 1, word("X"))])


@needs(CORD_SAMPLE)
@pytest.mark.real_data
def test_sample_receipt_derivation_matches_its_readme():
    row = json.loads((CORD_SAMPLE / "metadata.jsonl").read_text().splitlines()[0])
    gt = derive_gt_parse(json.loads(row["ground_truth"])["valid_line"])
    assert gt == SAMPLE_GT_PARSE
    assert parse_target(to_target(gt)) == gt


@needs(CORD_JSON)
@pytest.mark.real_data
def test_round_trip_on_every_real_cord_annotation():
    files = sorted(CORD_JSON.glob("*/*.json"))
    assert len(files) == 900
    for path in files:
        gt = derive_gt_parse(json.loads(path.read_text())["valid_line"])
        assert parse_target(to_target(gt)) == gt, path.name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("total_price", "*46,000"),  # a leading star, as some printers mark totals
        ("tax_price", "-"),  # a dash for "no tax"
        ("cashprice", " 50,000 "),
    ],
)
def test_price_rule_accepts_how_real_receipts_write_amounts(field, value):
    assert price_violations({"total" if "tax" not in field else "sub_total": {field: value}}) == []


def test_price_rule_accepts_a_percentage_only_on_a_discount_line():
    assert price_violations({"sub_total": {"discount_price": "100%"}}) == []
    assert price_violations({"sub_total": {"tax_price": "10%"}}) == [
        "sub_total.tax_price='10%' (not a number)"
    ]


def test_value_types_follow_cords_schema():
    assert type_violations({"menu": {"nm": ["NASI", "GORENG"], "cnt": "1", "price": "8,500"}}) == []
    assert type_violations({"menu": {"nm": 42, "cnt": 1, "price": 8500}}) == [
        "menu.nm=42 (int, not a string)",
        "menu.cnt=1 (int, not a string)",
        "menu.price=8500 (int, not a string)",
    ]
    assert type_violations({"menu": [{"nm": "A", "cnt": ["x", "1"]}]}) == [
        "menu[0].cnt=['x', '1'] (one value split into tokens)"
    ]
    assert type_violations({"sub_total": {"subtotal_price": ["Rp", "19.000"]}}) == [
        "sub_total.subtotal_price=['Rp', '19.000'] (one value split into tokens)"
    ]
    # a field printed twice is a list of whole values, as cord-v2 writes it: no violation
    assert (
        type_violations({"total": {"cashprice": ["100,000", "100,000"], "menuqty_cnt": "2"}}) == []
    )
