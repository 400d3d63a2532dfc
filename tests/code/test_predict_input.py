"""`predict` on input that is not a receipt image: a line naming the file and why, exit 1
(2 for a usage error such as no model), never a traceback; input far from a receipt gets a
warning beside its answer."""

import json

import pytest
from PIL import Image, ImageDraw

import tasks.core.io
from tasks.inference.reader import BLANK_STDDEV, BadImage, open_image, receipt_warnings
from tasks.predict import main


def run(argv, capsys, code: int = 1) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == code
    said = capsys.readouterr()
    err = said.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    if code == 1:  # a file that failed still has its line on stdout
        (row,) = [json.loads(line) for line in said.out.strip().splitlines()]
        assert err[0] == f"predict: {row['error']}"
    return err[0]


def receipt(tmp_path):
    path = tmp_path / "receipt.png"
    image = Image.new("RGB", (300, 600), "white")
    ImageDraw.Draw(image).text((20, 20), "TOTAL 36,225", fill="black")
    image.save(path)
    return path


def model_dir(tmp_path):
    """A folder that passes for a model directory: no file here is good enough to load one."""
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path / "model"


def written(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda d: d, "is a directory, not an image"),
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: written(d / "empty.png", b""), "empty file (0 bytes)"),
        (lambda d: written(d / "notes.txt", b"hello"), "not a readable image"),
    ],
    ids=["directory", "missing", "empty", "text"],
)
def test_a_bad_input_is_one_line_and_exit_1(tmp_path, capsys, make, said):
    target = make(tmp_path)
    line = run(["--model", str(model_dir(tmp_path)), str(target)], capsys)
    assert line.startswith(f"predict: {target}: ") and said in line


def test_a_decompression_bomb_is_refused_at_the_documented_limit(tmp_path, capsys):
    assert Image.MAX_IMAGE_PIXELS == tasks.core.io.MAX_IMAGE_PIXELS == 100_000_000
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 MP in a few kB
    assert bomb.stat().st_size < 100_000
    line = run(["--model", str(model_dir(tmp_path)), str(bomb)], capsys)
    assert "too large to open safely" in line and "100,000,000 pixels" in line


def test_a_missing_model_is_one_line_and_exit_2(tmp_path, capsys):
    line = run(["--model", str(tmp_path / "no-model"), str(receipt(tmp_path))], capsys, code=2)
    assert "no model directory here" in line and "models:/receipt-llava@champion" in line


def test_open_image_names_its_label():
    with pytest.raises(BadImage, match="row 3: empty file"):
        open_image(b"", name="row 3")


def test_input_far_from_a_receipt_gets_warnings(tmp_path):
    assert receipt_warnings(open_image(receipt(tmp_path))) == []
    blank = receipt_warnings(Image.new("RGB", (300, 600), "white"))
    assert len(blank) == 1 and blank[0].startswith("nearly blank") and str(BLANK_STDDEV) in blank[0]
    strip = Image.new("RGB", (40, 400), "white")
    ImageDraw.Draw(strip).rectangle((5, 5, 30, 390), fill="black")
    assert [w.split(" ")[0] for w in receipt_warnings(strip)] == ["extreme"]
