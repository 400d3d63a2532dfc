"""The embedded base's learning curve: held-out reading accuracy against pretraining budget.

    python -m bench.pretrain_curve [--reader models/tiny-reader] [--out docs/pretrain_curve.png]

Plots the curve that `make pretrain` measured (phase 1 every `pretrain.eval_every` steps,
phase 2 every `pretrain.natural.eval_every`, on held-out pages) and recorded in
`<reader>/pretrain.json`, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot(reader: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads((reader / "pretrain.json").read_text())
    curve = report["curve"]
    pages = [c["pages"] for c in curve]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(pages, [c["char_similarity"] for c in curve], "o-", label="padded reading: similarity")
    ax.plot(pages, [c["exact_pages"] for c in curve], "s--", label="padded reading: exact pages")
    natural = [c for c in curve if "natural_char_similarity" in c]
    if natural:
        ax.plot(
            [c["pages"] for c in natural],
            [c["natural_char_similarity"] for c in natural],
            "^-",
            label="natural reading: similarity",
        )
        ax.axvline(
            natural[0]["pages"] - natural[0]["step"] * report["params"]["natural"]["batch_size"],
            color="grey",
            lw=0.8,
            ls=":",
        )
    ax.set_xlabel("pretraining budget (pages seen)")
    ax.set_ylabel("held-out reading accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    minutes = (curve[-1]["seconds"] or 0) / 60
    ax.set_title(
        f"tiny base reading, {minutes:.0f} min on {report['device']} ({report['threads']} threads);"
        " phase 2 (natural order) right of the dotted line",
        fontsize=8,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reader", default="models/tiny-reader")
    ap.add_argument("--out", default="docs/pretrain_curve.png")
    args = ap.parse_args(argv)
    plot(Path(args.reader), Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
