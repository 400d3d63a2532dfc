"""Property-based fuzzing of the data path (hypothesis): generated metadata rows and ground
truths (wrong types, truncations, odd unicode, huge values, path tricks) through `make data`'s
core (imagefolder source -> snapshot), ingest and validation's per-record rules.

Every example ends one of two ways: a ValueError whose message names the metadata line or
the record, with no snapshot left behind; or a dataset whose records either break a rule
(validation names them) or encode through the training collator. Never a traceback of
another kind, and never a byte of a file from outside the source directory.
"""

import io
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from tasks.ingest import run_ingest
from tasks.model.collator import ReceiptCollator
from tasks.model.modeling import load_processor
from tasks.refresh_data import run_data
from tasks.validate import record_table
from tests.conftest import small_params

pytestmark = pytest.mark.timeout(600)

OUTSIDE = "@outside@"  # replaced by the absolute path of a file next to the source directory


def png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 64), color).save(buf, format="PNG")
    return buf.getvalue()


SECRET = png("red")  # the file outside the source: its bytes must never be read in

leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | st.sampled_from(["25,000", "*46,000", "-", "100%", "x", "1", "Rp 1.250.000", "ü€\u202e"])
)
fields = st.sampled_from(["nm", "cnt", "price", "unitprice", "total_price", "tax_price", "etc"])
group = st.dictionaries(fields, leaf | st.lists(leaf, max_size=3), max_size=4)
gt_parse = st.dictionaries(
    st.sampled_from(["menu", "sub_total", "total", "bogus"]),
    group | st.lists(group, max_size=3) | leaf,
    max_size=3,
)
truth_text = st.builds(lambda g: json.dumps({"gt_parse": g}), gt_parse)
ground_truth = st.one_of(
    truth_text,
    st.builds(lambda g: {"gt_parse": g}, gt_parse),  # an object instead of a string
    st.builds(lambda t, n: t[:n], truth_text, st.integers(0, 60)),  # truncated
    st.text(max_size=40),
    leaf,
)
GOOD = [f"r{i}.png" for i in range(4)] + ["sub/r0.png", "img/q.png"]
good_name = st.sampled_from(GOOD)
tricky_name = st.one_of(
    st.sampled_from(["missing.png", "../secret.png", OUTSIDE, "link.png", "notes.txt"]),
    st.sampled_from(["", ".", "sub", "ü/€.png", "a\\b.png"]),
    st.integers() | st.none(),
    st.text(max_size=12),
)
# Mostly well-formed rows, so that examples get past the source into ingest and validation.
good_row = st.fixed_dictionaries(
    {"file_name": good_name, "ground_truth": st.one_of(truth_text, truth_text, ground_truth)},
    optional={"split": st.sampled_from(["train", "test", "dev", "validation"])},
)
bad_row = st.one_of(
    st.fixed_dictionaries(  # a well-formed row with an odd split
        {"file_name": good_name, "ground_truth": truth_text},
        optional={"split": st.sampled_from(["weird", 5, None, "", "TEST", ["train"]])},
    ),
    st.fixed_dictionaries({"file_name": good_name, "ground_truth": ground_truth}),
    st.fixed_dictionaries({"file_name": tricky_name, "ground_truth": ground_truth}),
    leaf | st.lists(leaf, max_size=2),  # a line that is no object
)
row = st.one_of(good_row, good_row, bad_row)


def make_source(root: Path, rows: list) -> Path:
    src = root / "src"
    for i, rel in enumerate(GOOD):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(png(["white", "gray", "blue", "green", "yellow", "black"][i]))
    (src / "notes.txt").write_text("not an image")
    (root / "secret.png").write_bytes(SECRET)
    (src / "link.png").symlink_to(root / "secret.png")
    lines = []
    for r in rows:
        if isinstance(r, dict) and r.get("file_name") == OUTSIDE:
            r = r | {"file_name": str(root / "secret.png")}
        lines.append(json.dumps(r, ensure_ascii=False))
    (src / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src


@pytest.fixture(scope="module")
def collator(base_dir):
    p = small_params()
    return ReceiptCollator(load_processor(str(base_dir)), p.ingest.prompt, 10**6)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples in CI every run (HYPOTHESIS_PROFILE for more)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(row, min_size=1, max_size=4))
def test_bad_input_is_named_or_kept_out_never_a_traceback(rows, collator):
    p = small_params()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = make_source(root, rows)
        try:
            run_data(p.data, root / "data", source=f"imagefolder:{src}")
        except ValueError as exc:
            assert re.search(r"metadata\.jsonl:\d+|record ['\"]", str(exc)), str(exc)
            assert not (root / "data").exists()  # no half-written snapshot
            event("make data refused it, naming the line or record")
            return
        for written in (root / "data" / "images").iterdir():
            assert written.read_bytes() != SECRET
        try:
            run_ingest(p.ingest, root / "data", root / "ds")
        except ValueError as exc:
            assert re.search(r"record ['\"]", str(exc)), str(exc)
            assert not (root / "ds").exists()
            event("ingest refused it, naming the record")
            return
        table = record_table(root / "ds")
        rules = ["image_decodes", "has_gt_parse", "schema_ok", "prices_ok", "types_ok"]
        passing = table[table[rules].all(axis=1)]
        for r in passing.itertuples():
            with Image.open(root / "data" / "images" / f"{r.id}.png") as image:
                collator.encode({"id": r.id, "image": image, "target": r.target})
        event(f"ingested; records passing every rule: {min(len(passing), 2)}+")
        failing = table[~table[rules].all(axis=1)]
        reasons = ["image_error", "gt_error", "schema_error", "price_error", "type_error"]
        for r in failing.itertuples():  # each broken record carries a reason naming it
            assert any(getattr(r, c) for c in reasons), r
