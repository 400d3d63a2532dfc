"""`make data`: refresh the raw snapshot in data/ from a source and re-record it with `dvc add`.

    python -m tasks.data [--source SOURCE] [--out data] [--no-dvc]

This is what a scheduled retrain calls before `dvc repro`, so each data version gets its own hash.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from tasks.config import DataParams, load_params
from tasks.io import atomic_dir, quiet_telemetry
from tasks.sources import RawRecord, parse_source, write_snapshot


def load_source(source: str, p: DataParams) -> list[RawRecord]:
    kind, arg = parse_source(source)
    if kind == "cord":
        from tasks.sources import cord

        return cord.load(p.cord, p.render_max_side, arg or cord.SHIPPED)
    if kind == "synthetic":
        from tasks.sources import synthetic

        return synthetic.generate(p.synthetic)
    if kind == "imagefolder":
        from tasks.sources import imagefolder

        return imagefolder.load(str(arg))
    if kind == "cord-json":
        from tasks.sources import cord_json

        return cord_json.load(str(arg), p.render_max_side)
    from tasks.sources import hf

    return hf.load(arg)


def dvc_add(path: Path, repo: Path) -> str:
    """Record `path` in `<path>.dvc` and return its md5 (the data version)."""
    subprocess.run(
        ["dvc", "add", "--quiet", str(path.resolve().relative_to(repo.resolve()))],
        cwd=repo,
        check=True,
    )
    import yaml

    meta = yaml.safe_load((repo / f"{path.name}.dvc").read_text())
    return meta["outs"][0]["md5"]


def run_data(
    p: DataParams, out_dir: str | Path, source: str | None = None, repo: str | Path | None = None
) -> dict:
    """Build a snapshot from `source` (default params' data.source) into out_dir, atomically.

    With `repo`, the snapshot is then recorded with `dvc add` in that DVC repo.
    """
    source = source or p.source
    records = load_source(source, p)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_snapshot(records, tmp, source)
    result = {"source": source, "records": len(records), "path": str(out_dir)}
    if repo is not None:
        result["md5"] = dvc_add(out_dir, Path(repo))
    return result


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--source",
        default=None,
        help="cord | synthetic | imagefolder:<dir> | cord-json:<dir> | hf:<id>",
    )
    ap.add_argument("--out", default="data")
    ap.add_argument("--no-dvc", action="store_true", help="write the snapshot without `dvc add`")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    out = Path(args.out)
    result = run_data(params.data, out, args.source, None if args.no_dvc else out.resolve().parent)
    print(
        f"data: {result['records']} records from {result['source']} -> {out}"
        + (f" (md5 {result['md5']})" if "md5" in result else "")
    )


if __name__ == "__main__":
    main()
