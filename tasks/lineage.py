"""Lineage: what a model version was made from, and restoring that data.

    python -m tasks.lineage show [--version N | --alias champion]
    python -m tasks.lineage restore --version N     # dvc checkout (or pull) of that data snapshot

A registered version's tags hold the git commit (+ dirty flag), data.dvc's md5, the
hash of each stage's entry in dvc.lock, and a params digest.
"""

from __future__ import annotations

import json

from tasks.core import cli
from tasks.core.errors import Refused
from tasks.registry.lineage import restore, show
from tasks.registry.tracking import setup


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    ap.add_argument("action", choices=["show", "restore"])
    ap.add_argument("--version")
    ap.add_argument("--alias", default=None, help="default champion (when --version is not given)")
    ap.add_argument("--repo", default=".")
    cli.run("lineage", ap, _lineage, argv)


class LineageMismatch(Refused):
    pass


def _lineage(a, p) -> str:
    r = p.register_
    info = show(setup(r.experiment, a.repo), r.model_name, a.version, a.alias)
    if a.action == "show":
        return json.dumps(info, indent=2)
    restored = restore(a.repo, info["data_md5"])
    if restored != info["data_md5"]:
        raise LineageMismatch(
            f"restored data of {r.model_name} v{info['version']} is {restored}, "
            f"not the version's data_md5 {info['data_md5']}"
        )
    return (
        f"restored data of {r.model_name} v{info['version']}: {restored} (matches its data_md5)\n"
        "back to the current data: git checkout data.dvc && dvc checkout data.dvc"
    )


if __name__ == "__main__":
    main()
