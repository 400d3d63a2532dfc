"""Promotion through the registry: move the `champion` alias, or roll it back.

    python -m tasks.promote                      # promote the challenger
    python -m tasks.promote --version 3          # promote version 3
    python -m tasks.promote --rollback 2         # champion back to version 2

A version is promoted only when it passed the gate and beats the current champion on
`gate.primary_metric`, measured on the same test split (the gate re-evaluated the
champion there); or when it serves the champion's own weights (the same `weights_digest`)
with other code or settings and scores no lower there, so that a fix to the serving code
reaches the champion without a better model. The reason is recorded in version tags;
otherwise it refuses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.errors import Refused


class PromotionRefused(Refused):
    pass


def _move_champion(
    client, params: Params, mv, champion, reason: str, repo: str | Path | None
) -> dict[str, Any]:
    """Point `champion` at mv and record why (and what it replaced) in mv's tags; with a repo,
    rewrite its reports/champion.json so that `dvc status` shows the gate stale."""
    from tasks.champion import run_champion

    name = params.register_.model_name
    version, previous = str(mv.version), (str(champion.version) if champion else None)
    client.set_registered_model_alias(name, "champion", version)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for key, value in {
        "promotion.reason": reason,
        "promotion.at": at,
        "promotion.previous_champion": previous or "none",
    }.items():
        client.set_model_version_tag(name, version, key, value)
    if repo is not None:
        run_champion(params, Path(repo) / params.paths.champion, repo)
    return {"name": name, "champion": version, "previous": previous, "reason": reason}


def promote(
    client, params: Params, version: str | None = None, repo: str | Path | None = None
) -> dict[str, Any]:
    """Move `champion` to `version` (default: the challenger) if it passed the gate and beats the champion."""
    from tasks.registry.lineage import version_of
    from tasks.registry.tracking import alias_version

    name, metric = params.register_.model_name, params.gate.primary_metric
    mv = (
        version_of(client, name, version, None)
        if version
        else alias_version(client, name, "challenger")
    )
    if mv is None:
        raise PromotionRefused(f"{name}: no challenger to promote (register a version first)")
    tags = dict(mv.tags)
    if tags.get("gate_passed") != "true":
        raise PromotionRefused(
            f"{name} v{mv.version}: did not pass the gate (gate_passed={tags.get('gate_passed')})"
        )
    champion = alias_version(client, name, "champion")
    if champion is not None and str(champion.version) == str(mv.version):
        raise PromotionRefused(f"{name} v{mv.version} is already the champion")
    value = float(tags[f"metric.{metric}"])
    if champion is None:
        reason = f"first champion: passed the gate, {metric}={value}"
    else:
        # Like for like: the champion's score on this version's test split, from its gate.
        if tags.get("gate.champion_version") != str(champion.version):
            raise PromotionRefused(
                f"{name} v{mv.version} was gated against champion v{tags.get('gate.champion_version', 'none')}, "
                f"not the current v{champion.version}: retrain (or rerun its gate) to compare on the same split"
            )
        best, margin = float(tags[f"gate.champion.{metric}"]), params.gate.min_improvement
        weights = tags.get("weights_digest")
        if weights and weights == dict(champion.tags).get("weights_digest") and value >= best:
            reason = (
                f"serves champion v{champion.version}'s weights with other code or settings, "
                f"no lower on {metric}: {value} >= {best} (same test split)"
            )
        elif value < best + margin:
            raise PromotionRefused(
                f"{name} v{mv.version} does not beat champion v{champion.version} on {metric}: "
                f"{value} < {best} + min_improvement {margin} (same test split)"
            )
        else:
            reason = (
                f"beats champion v{champion.version} on {metric}: {value} >= {best} + {margin} "
                "(same test split)"
            )
    return _move_champion(client, params, mv, champion, reason, repo)


def rollback(
    client, params: Params, version: str, repo: str | Path | None = None
) -> dict[str, Any]:
    """Point `champion` back at a named version that passed its gate."""
    from tasks.registry.lineage import version_of
    from tasks.registry.tracking import alias_version

    name = params.register_.model_name
    mv = version_of(client, name, version, None)
    if dict(mv.tags).get("gate_passed") != "true":
        raise PromotionRefused(
            f"{name} v{version}: never passed the gate; refusing to roll back to it"
        )
    champion = alias_version(client, name, "champion")
    reason = f"rollback from v{champion.version if champion else 'none'}"
    return _move_champion(client, params, mv, champion, reason, repo)


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--version", help="version to promote (default: the challenger)")
    ap.add_argument("--rollback", metavar="VERSION", help="make this version the champion again")
    cli.run("promote", ap, _promote, argv)


def _promote(a, p) -> str:
    from tasks.registry.tracking import setup

    client = setup(p.register_.experiment, a.repo)
    res = (
        rollback(client, p, a.rollback, a.repo)
        if a.rollback
        else promote(client, p, a.version, a.repo)
    )
    return f"promote: {res['name']} champion -> v{res['champion']} ({res['reason']})"


if __name__ == "__main__":
    main()
