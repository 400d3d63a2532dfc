"""The run's summary as a short table: each metric before and after QLoRA, and the gate."""

from __future__ import annotations

from typing import Any

METRICS = ("json_valid_rate", "ted_accuracy", "field_f1", "total_price_exact", "exact_match")


def summary_table(metrics: dict[str, Any], gate: dict[str, Any]) -> str:
    """Markdown: | metric | base | fine-tuned |, how many answers carry warnings, then the
    gate's verdict and its criteria."""
    lines = ["| metric | base | fine-tuned |", "|---|---:|---:|"]
    for k in METRICS:
        if k in metrics:
            lines.append(f"| {k} | {_num(metrics.get('base_' + k))} | {_num(metrics[k])} |")
    if "warned_rate" in metrics:
        lines += [
            "",
            f"Warnings on {metrics['warned_rate']:.0%} of the fine-tuned answers (mean field F1 "
            f"warned {_num(metrics.get('f1_warned'))}, unwarned {_num(metrics.get('f1_unwarned'))}); "
            f"low-confidence threshold {_num(metrics['confidence_threshold'])}, picked on "
            f"{metrics.get('validation_n')} validation receipts.",
        ]
    if gate:
        lines += [
            "",
            f"**Gate: {'passed' if gate['passed'] else 'FAILED'}**",
            "",
            "| criterion | value | bound | passed |",
            "|---|---:|---:|---|",
        ]
        lines += [
            f"| {c['criterion']} | {_num(c['value'])} | {_num(c['bound'])} | {c['passed']} |"
            for c in gate["criteria"]
        ]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
