"""A registered version is what its pyfunc carries: the same weights served by other code are
another version, while bytecode caches and unchanged files are not."""

import shutil

from tasks.register import model_digest, weights_digest


def test_the_model_digest_follows_the_weights_the_config_and_the_served_code(tmp_path):
    model, code = tmp_path / "model", tmp_path / "tasks"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (code / "inference").mkdir(parents=True)
    (code / "inference" / "ocr.py").write_text("def ocr_texts(images):\n    return []\n")
    config = {"max_new_tokens": 640}
    first = model_digest(model, config, code)

    (code / "inference" / "__pycache__").mkdir()
    (code / "inference" / "__pycache__" / "ocr.cpython-311.pyc").write_bytes(b"\x00")
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert model_digest(copy, dict(config), code) == first  # content, not place or bytecode

    (code / "inference" / "ocr.py").write_text("def ocr_texts(images, workers=2):\n    return []\n")
    served_otherwise = model_digest(model, config, code)
    assert served_otherwise != first
    assert model_digest(model, {"max_new_tokens": 320}, code) not in (first, served_otherwise)
    # the weights digest is what stays: the same weights, whatever serves them
    weights = weights_digest(model, config)
    assert weights_digest(copy, {"max_new_tokens": 320}) == weights
    assert weights_digest(model, config | {"base": "llava-hf/llava-1.5-7b-hf"}) != weights
    (model / "model.safetensors").write_bytes(b"other weights")
    assert model_digest(model, config, code) not in (first, served_otherwise)
    assert weights_digest(model, config) != weights
