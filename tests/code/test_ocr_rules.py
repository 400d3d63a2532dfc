"""The OCR+rules baseline turns OCR lines into CORD's JSON by keywords and regexes."""

from bench.ocr_rules import rules_parse


def test_rules_read_items_and_summary_lines():
    ocr = "\n".join(
        [
            "2 ICE BLACKCOFFE 82,000",
            "AVOCADO COFFEE 61,000",
            "SUB_TOTAL 194,000",
            "DISCOUNT 19,400",
            "TAX 10% 17,460",
            "TOTAL 174,600",
            "CASH 200,000",
            "CHANGE 25,400",
        ]
    )
    assert rules_parse(ocr) == {
        "menu": [
            {"nm": "ICE BLACKCOFFE", "cnt": "2", "price": "82,000"},
            {"nm": "AVOCADO COFFEE", "price": "61,000"},
        ],
        "sub_total": {
            "subtotal_price": "194,000",
            "discount_price": "19,400",
            "tax_price": "17,460",
        },
        "total": {"total_price": "174,600", "cashprice": "200,000", "changeprice": "25,400"},
    }


def test_one_item_is_a_dict_and_lines_without_amounts_are_not_items():
    assert rules_parse("THANK YOU\nNASI GORENG x2 35.000\nTOTAL 35.000") == {
        "menu": {"nm": "NASI GORENG", "cnt": "2", "price": "35.000"},
        "total": {"total_price": "35.000"},
    }
    assert rules_parse("") == {}
