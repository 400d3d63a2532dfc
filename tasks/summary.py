"""`make run`'s closing summary: the metrics before and after QLoRA, and the gate's decision.

python -m tasks.summary
"""

from __future__ import annotations

from pathlib import Path

from tasks.core import cli
from tasks.core.errors import MissingInput
from tasks.core.io import read_json
from tasks.evaluation.summary import summary_table


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__, paths=("metrics", "gate"))

    def body(a, p) -> str:
        if not Path(a.metrics).is_file():
            raise MissingInput(f"{a.metrics}: no metrics yet (the evaluate stage writes them)")
        gate = read_json(a.gate) if Path(a.gate).is_file() else {}
        return summary_table(read_json(a.metrics), gate)

    cli.run("summary", ap, body, argv)


if __name__ == "__main__":
    main()
