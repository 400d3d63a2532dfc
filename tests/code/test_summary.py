"""`make run` closes with a short table: each metric before and after QLoRA, and the gate."""

import json

from tasks.summary import main


def test_the_closing_summary_is_a_table_of_before_after_and_the_gate(tmp_path, capsys):
    metrics = {"json_valid_rate": 0.54, "base_json_valid_rate": 0.0, "ted_accuracy": 0.1919}
    metrics |= {"base_ted_accuracy": 0.0, "n": 50}
    gate = {
        "passed": False,
        "criteria": [
            {"criterion": "json_valid_rate >= 0.9", "value": 0.54, "bound": 0.9, "passed": False}
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    (tmp_path / "g.json").write_text(json.dumps(gate))
    main(["--metrics", str(tmp_path / "m.json"), "--gate", str(tmp_path / "g.json")])
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        "| metric | base | fine-tuned |",
        "|---|---:|---:|",
        "| json_valid_rate | 0.000 | 0.540 |",
        "| ted_accuracy | 0.000 | 0.192 |",
    ]
    assert "**Gate: FAILED**" in out
    assert out[-1] == "| json_valid_rate >= 0.9 | 0.540 | 0.900 | False |"


def test_the_summary_says_how_many_answers_carry_warnings(tmp_path, capsys):
    metrics = {"json_valid_rate": 0.54, "base_json_valid_rate": 0.0, "warned_rate": 0.25}
    metrics |= {
        "f1_warned": 0.1,
        "f1_unwarned": 0.7,
        "confidence_threshold": -0.4,
        "validation_n": 45,
    }
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    main(["--metrics", str(tmp_path / "m.json"), "--gate", str(tmp_path / "none.json")])
    said = capsys.readouterr().out
    assert "Warnings on 25% of the fine-tuned answers" in said
    assert "warned 0.100, unwarned 0.700" in said and "threshold -0.400" in said
