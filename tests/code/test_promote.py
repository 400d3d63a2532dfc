"""Promotion rules against a real MLflow registry (SQLite), with versions tagged as register tags them."""

import pytest

from tasks.promote import PromotionRefused, promote, rollback
from tests.conftest import small_params


@pytest.fixture
def client(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = MlflowClient()
    c.create_registered_model("receipt-llava")
    return c


def version(client, tags):
    mv = client.create_model_version("receipt-llava", source="file:///nowhere", tags=tags)
    client.set_registered_model_alias("receipt-llava", "challenger", mv.version)
    return str(mv.version)


def test_promotion_needs_the_gate_and_a_real_improvement_then_rollback(client):
    p = small_params(gate={"primary_metric": "ted_accuracy", "min_improvement": 0.01})
    v1 = version(client, {"gate_passed": "true", "metric.ted_accuracy": "0.40"})
    assert promote(client, p)["reason"].startswith("first champion")

    v2 = version(client, {"gate_passed": "false", "metric.ted_accuracy": "0.90"})
    with pytest.raises(PromotionRefused, match="did not pass the gate"):
        promote(client, p)

    v3 = version(
        client,
        {
            "gate_passed": "true",
            "metric.ted_accuracy": "0.405",
            "gate.champion_version": v1,
            "gate.champion.ted_accuracy": "0.40",
        },
    )
    with pytest.raises(
        PromotionRefused, match=r"does not beat champion v1 on ted_accuracy: 0.405 < 0.4"
    ):
        promote(client, p)

    v4 = version(
        client,
        {
            "gate_passed": "true",
            "metric.ted_accuracy": "0.6",
            "gate.champion_version": v1,
            "gate.champion.ted_accuracy": "0.41",
        },
    )
    res = promote(client, p)
    assert res == {
        "name": "receipt-llava",
        "champion": v4,
        "previous": v1,
        "reason": "beats champion v1 on ted_accuracy: 0.6 >= 0.41 + 0.01 (same test split)",
    }
    assert client.get_model_version("receipt-llava", v4).tags["promotion.previous_champion"] == v1

    # v3 was gated against v1, which is no longer the champion: not comparable
    with pytest.raises(PromotionRefused, match="gated against champion v1, not the current v4"):
        promote(client, p, v3)
    with pytest.raises(PromotionRefused, match="never passed the gate"):
        rollback(client, p, v2)
    assert rollback(client, p, v1)["champion"] == v1
    assert client.get_model_version_by_alias("receipt-llava", "champion").version in (v1, int(v1))


def test_the_champions_own_weights_with_other_code_replace_it_when_no_lower(client):
    """A fix to the serving code makes a version with the champion's weights: it takes over
    without beating the champion, but not when it scores lower or its weights differ."""
    p = small_params(gate={"primary_metric": "ted_accuracy", "min_improvement": 0.01})
    v1 = version(
        client,
        {"gate_passed": "true", "metric.ted_accuracy": "0.5", "weights_digest": "w1"},
    )
    promote(client, p)

    def gated(ted, weights):
        return version(
            client,
            {
                "gate_passed": "true",
                "metric.ted_accuracy": ted,
                "gate.champion_version": v1,
                "gate.champion.ted_accuracy": "0.5",
                "weights_digest": weights,
            },
        )

    gated("0.5", "w2")  # other weights, no better: refused as before
    with pytest.raises(PromotionRefused, match="does not beat champion v1"):
        promote(client, p)
    gated("0.49", "w1")  # the same weights, scoring lower (e.g. other decoding settings)
    with pytest.raises(PromotionRefused, match="does not beat champion v1"):
        promote(client, p)
    v4 = gated("0.5", "w1")
    res = promote(client, p)
    assert res["champion"] == v4 and res["previous"] == v1
    assert res["reason"].startswith("serves champion v1's weights with other code or settings")
