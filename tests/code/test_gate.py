import pytest

from tasks.gate import decide
from tests.conftest import small_params

GOOD = {"json_valid_rate": 1.0, "ted_accuracy": 0.5, "field_f1": 0.4}


def test_thresholds_only_without_a_champion():
    p = small_params(gate={"min_json_valid_rate": 0.9, "min_ted_accuracy": 0.6})
    report = decide(GOOD, p, None)
    assert not report["passed"] and report["champion"] is None
    failed = [c for c in report["criteria"] if not c["passed"]]
    assert [c["criterion"] for c in failed] == ["ted_accuracy >= 0.6"]
    assert failed[0]["margin"] == pytest.approx(-0.1)
    assert len(report["criteria"]) == 3


def test_no_worse_than_champion_by_more_than_max_regression():
    p = small_params(gate={"min_json_valid_rate": 0.0, "max_regression": 0.02})
    champion = {"version": "3", "json_valid_rate": 1.0, "ted_accuracy": 0.51, "field_f1": 0.5}
    report = decide(GOOD, p, champion)
    failed = {c["criterion"]: c for c in report["criteria"] if not c["passed"]}
    assert list(failed) == ["field_f1 >= champion v3 (0.5) - 0.02"]  # 0.4 < 0.48
    assert failed["field_f1 >= champion v3 (0.5) - 0.02"]["margin"] == pytest.approx(-0.08)
    assert not report["passed"]
    assert decide(GOOD | {"field_f1": 0.49}, p, champion)["passed"]  # within the allowed regression
