"""CORD's `gt_parse` <-> target text, and the derivation of `gt_parse` from CORD's original annotation.

- `to_target(gt_parse)`: canonical, compact JSON (CORD's key order, nesting kept as is).
- `parse_target(text)`: the inverse, tolerant of truncated or malformed model output.
- `derive_gt_parse(valid_line)`: cord-v2's nested form from CORD v0.1's word-level lines.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

# CORD's schema: top-level groups and the fields each may hold, in the order we write them.
SCHEMA: dict[str, tuple[str, ...]] = {
    "menu": (
        "nm",
        "num",
        "unitprice",
        "cnt",
        "discountprice",
        "price",
        "itemsubtotal",
        "vatyn",
        "etc",
        "sub",
    ),
    "void_menu": ("nm", "num", "unitprice", "cnt", "price", "etc"),
    "sub_total": (
        "subtotal_price",
        "discount_price",
        "service_price",
        "othersvc_price",
        "tax_price",
        "etc",
    ),
    "total": (
        "total_price",
        "total_etc",
        "cashprice",
        "changeprice",
        "creditcardprice",
        "emoneyprice",
        "menutype_cnt",
        "menuqty_cnt",
    ),
}
SUB_FIELDS: tuple[str, ...] = ("nm", "unitprice", "cnt", "discountprice", "price", "etc")
_ITEM_GROUPS = ("menu", "void_menu")  # grouped into one dict per item by group_id
_ORDER = {g: {k: i for i, k in enumerate(keys)} for g, keys in SCHEMA.items()}
_ORDER["sub"] = {k: i for i, k in enumerate(SUB_FIELDS)}
_TOP_ORDER = {k: i for i, k in enumerate(SCHEMA)}


# --------------------------------------------------------------------------- canonical text
def _ordered(value: Any, group: str | None) -> Any:
    """Recursively order dict keys by CORD's schema (unknown keys after, alphabetically)."""
    if isinstance(value, list):
        return [_ordered(v, group) for v in value]
    if not isinstance(value, dict):
        return value
    rank = _TOP_ORDER if group is None else _ORDER.get(group, {})
    keys = sorted(value, key=lambda k: (rank.get(k, len(rank)), k))
    return {
        k: _ordered(value[k], k if group is None else ("sub" if k == "sub" else group))
        for k in keys
    }


def to_target(gt_parse: dict[str, Any]) -> str:
    """Canonical target text: schema key order, compact separators, non-ASCII kept."""
    if not isinstance(gt_parse, dict):
        raise TypeError(f"gt_parse must be a dict, got {type(gt_parse).__name__}")
    return json.dumps(_ordered(gt_parse, None), ensure_ascii=False, separators=(",", ":"))


def _closed(prefix: str) -> str | None:
    """Close the open string and brackets of a JSON prefix; None if its brackets mismatch."""
    stack: list[str] = []
    in_str = esc = False
    for ch in prefix:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and (not stack or stack.pop() != ch):
            return None
    if esc:
        prefix = prefix[:-1]
    return prefix + ('"' if in_str else "") + "".join(reversed(stack))


def is_valid_json(text: str) -> bool:
    """True when the text, stripped, is exactly one JSON object."""
    try:
        return isinstance(json.loads(text.strip()), dict)
    except (json.JSONDecodeError, ValueError):
        return False


def parse_target(text: str, max_repairs: int = 64) -> dict[str, Any]:
    """Target text -> dict, tolerant of what a model emits.

    Takes the first JSON object in the text (trailing junk ignored). A truncated
    object is repaired by closing its open string and brackets, dropping the
    last incomplete member when needed. Returns {} when nothing is recoverable.
    """
    start = text.find("{")
    if start < 0:
        return {}
    body = text[start:]
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)
        if isinstance(obj, dict):
            return obj
    except json.JSONDecodeError:
        pass
    # Candidate cut points, longest first: the whole text, then before each
    # comma and after each opening bracket, so the last partial member goes.
    cuts = [len(body)]
    cuts += sorted(
        {i for i, ch in enumerate(body) if ch == ","}
        | {i + 1 for i, ch in enumerate(body) if ch in "{["},
        reverse=True,
    )
    for cut in cuts[:max_repairs]:
        candidate = _closed(body[:cut].rstrip().rstrip(":").rstrip())
        if candidate is None:
            continue
        try:
            obj, _ = json.JSONDecoder().raw_decode(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return {}


# --------------------------------------------------------------------------- prices
_PRICE = re.compile(r"^(\d{1,3}([.,]\d{3})+|\d+)([.,]\d{1,2})?$")
_CURRENCY = re.compile(r"(?i)\b(rp|idr|usd)\.?|[$@]")


def is_price_field(key: str) -> bool:
    return "price" in key


def parse_price(text: str) -> float:
    """'25,000' -> 25000.0, 'Rp 1.250.000' -> 1250000.0, '-19,400' / '19,400-' / '(19,400)' -> -19400.0.

    Accepts what receipts print around a number (currency, brackets, a trailing
    'x' or '.', a leading or trailing minus). Raises ValueError naming the text
    when what remains is not a number.
    """
    s = _CURRENCY.sub("", str(text)).replace(" ", "")
    negative = s.startswith("-") or s.endswith("-") or (s.startswith("(") and s.endswith(")"))
    s = s.strip("-+").strip("()[]").rstrip("xX").rstrip(".").lstrip(":")
    if not _PRICE.match(s):
        raise ValueError(f"not a price: {text!r}")
    # A trailing 1-2 digit group after the last separator is decimals ("12.50");
    # a 3-digit group is thousands ("25,000"), as CORD writes Indonesian rupiah.
    m = re.match(r"^(.*)[.,](\d{1,2})$", s)
    whole, frac = (m.group(1), m.group(2)) if m else (s, "")
    value = float(re.sub(r"[.,]", "", whole) + ("." + frac if frac else ""))
    return -value if negative else value


def iter_fields(node: Any, path: str = ""):
    """Yield (path, key, value) for every leaf of a gt_parse, e.g. ('menu[0].sub.nm', 'nm', 'X')."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from (
                iter_fields(v, f"{path}.{k}" if path else k)
                if isinstance(v, (dict, list))
                else [(f"{path}.{k}" if path else k, k, v)]
            )
    elif isinstance(node, list):
        key = path.rsplit(".", 1)[-1].split("[")[0]
        for i, v in enumerate(node):
            yield from (
                iter_fields(v, f"{path}[{i}]")
                if isinstance(v, (dict, list))
                else [(f"{path}[{i}]", key, v)]
            )


def schema_violations(gt_parse: Any) -> list[str]:
    """Keys outside CORD's schema, as 'path.key' strings (empty list when it conforms)."""
    if not isinstance(gt_parse, dict):
        return ["<gt_parse is not an object>"]
    bad: list[str] = []
    for group, body in gt_parse.items():
        if group not in SCHEMA:
            bad.append(group)
            continue
        items = body if isinstance(body, list) else [body]
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                bad.append(f"{group}[{i}]:<not an object>")
                continue
            for key, value in item.items():
                if key not in SCHEMA[group]:
                    bad.append(f"{group}.{key}")
                elif key == "sub":
                    subs = value if isinstance(value, list) else [value]
                    for s in subs:
                        if not isinstance(s, dict):
                            bad.append(f"{group}.sub:<not an object>")
                            continue
                        bad += [f"{group}.sub.{k}" for k in s if k not in SUB_FIELDS]
    return bad


# Fields that hold a count: ['x', '1'] there is one value split into tokens.
COUNT_FIELDS = ("cnt", "menutype_cnt", "menuqty_cnt")


def _is_amount(text: str) -> bool:
    try:
        parse_price(text.strip().lstrip("*"))
    except ValueError:
        return text.strip() == "-"
    return True


def type_violations(gt_parse: Any) -> list[str]:
    """Values that are not what CORD writes: every leaf a string (a field repeated within a group
    is a list of strings, as cord-v2 writes a second subtotal or cash line). A count or price
    list with a piece that is no number on its own (['x', '1'], ['Rp', '19.000']) is one value
    split into tokens."""
    if not isinstance(gt_parse, dict):
        return []  # schema_violations reports it
    bad = []
    for path, _key, value in iter_fields(gt_parse):
        if not isinstance(value, str):
            bad.append(f"{path}={value!r} ({type(value).__name__}, not a string)")
    for path, key, value in _lists(gt_parse):
        texts = [v for v in value if isinstance(v, str)]
        if key in COUNT_FIELDS:
            split = any(not re.fullmatch(r"\d+(?:[.,]\d+)?", v.strip()) for v in texts)
        else:
            split = is_price_field(key) and any(not _is_amount(v) for v in texts)
        if split:
            bad.append(f"{path}={value!r} (one value split into tokens)")
    return bad


def _lists(node: Any, path: str = ""):
    """(path, key, list) for every field whose value is a list of non-objects."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{k}" if path else k
            if isinstance(v, list) and v and not any(isinstance(x, (dict, list)) for x in v):
                yield p, k, v
            else:
                yield from _lists(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _lists(v, f"{path}[{i}]")


def price_violations(gt_parse: dict[str, Any]) -> list[str]:
    """Price fields that do not parse as numbers, or are negative outside discounts and voids.

    Written as real receipts write them, these pass: a leading `*` (`*46,000`), `-` for none
    (`tax_price='-'`), and a percentage on a discount line (`discount_price='100%'`)."""
    bad = []
    for path, key, value in iter_fields(gt_parse):
        if not is_price_field(key) or not isinstance(value, str):
            continue  # type_violations reports non-strings
        text = value.strip()
        if text == "-":
            continue
        if "discount" in key and re.fullmatch(r"-?\d{1,3}(?:[.,]\d+)?\s*%", text):
            continue
        try:
            amount = parse_price(text.lstrip("*"))
        except ValueError:
            bad.append(f"{path}={value!r} (not a number)")
            continue
        if amount < 0 and "discount" not in key and not path.startswith("void_menu"):
            bad.append(f"{path}={value!r} (negative)")
    return bad


# --------------------------------------------------------------------------- valid_line -> gt_parse
def _line_text(line: dict[str, Any]) -> str:
    """A line's value: its non-key words joined in reading order."""
    return " ".join(w["text"] for w in line.get("words", []) if not w.get("is_key")).strip()


def _put(d: dict[str, Any], key: str, value: str) -> None:
    """Set a field; a field repeated within one group becomes a list (as cord-v2 writes it)."""
    if key not in d:
        d[key] = value
    elif isinstance(d[key], list):
        d[key].append(value)
    else:
        d[key] = [d[key], value]


def derive_gt_parse(valid_line: list[dict[str, Any]]) -> dict[str, Any]:
    """cord-v2's `gt_parse` from CORD v0.1's `valid_line`.

    Lines group by category prefix; `menu`/`void_menu` lines further by
    `group_id` (one dict per item, in group order). A line's value is its
    words' text without `is_key` words; lines of only key words carry no value
    and are skipped. `menu.sub_*` lines form the item's `sub`: a new sub entry
    starts when a sub field repeats. A repeated field elsewhere becomes a list.
    A single item or sub entry is written as a dict, more as a list.
    """
    items: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    subs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    flat: dict[str, dict[str, Any]] = defaultdict(dict)
    for n, line in enumerate(valid_line):
        category = line.get("category", "")
        if "." not in category:
            raise ValueError(f"valid_line[{n}].category: expected 'group.field', got {category!r}")
        group, field = category.split(".", 1)
        value = _line_text(line)
        if not value:
            continue
        if group in _ITEM_GROUPS:
            gid = int(line.get("group_id", 0))
            item = items[group].setdefault(gid, {})
            if group == "menu" and field.startswith("sub_"):
                key = field[len("sub_") :]
                entries = subs[gid]
                if not entries or key in entries[-1]:
                    entries.append({})
                entries[-1][key] = value
            else:
                _put(item, field, value)
        else:
            _put(flat[group], field, value)

    out: dict[str, Any] = {}
    for group in SCHEMA:
        if group in _ITEM_GROUPS and items.get(group):
            ordered = []
            for gid in sorted(items[group]):
                item = items[group][gid]
                if group == "menu" and subs.get(gid):
                    item["sub"] = subs[gid][0] if len(subs[gid]) == 1 else subs[gid]
                ordered.append(item)
            out[group] = ordered[0] if len(ordered) == 1 else ordered
        elif flat.get(group):
            out[group] = flat[group]
    for group in flat:  # categories outside the schema are kept, so validation can flag them
        if group not in SCHEMA:
            out[group] = flat[group]
    return _ordered(out, None)
