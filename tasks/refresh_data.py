"""`make data`: refresh the raw snapshot in data/ from a source and re-record it with `dvc add`.

    python -m tasks.refresh_data [--source SOURCE] [--out data] [--no-dvc]

This is what a scheduled retrain calls before `dvc repro`, so each data version gets its own hash.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core import cli
from tasks.core.config import DataParams
from tasks.core.dvc import run_dvc
from tasks.core.io import atomic_dir
from tasks.data.sources import RawRecord, parse_source, write_snapshot


def load_source(source: str, p: DataParams) -> list[RawRecord]:
    kind, arg = parse_source(source)
    if kind == "cord":
        from tasks.data.sources import cord

        return cord.load(p.cord, p.render_max_side, arg or cord.SHIPPED)
    if kind == "synthetic":
        from tasks.data.sources import synthetic

        return synthetic.generate(p.synthetic)
    if kind == "imagefolder":
        from tasks.data.sources import imagefolder

        return imagefolder.load(str(arg))
    if kind == "cord-json":
        from tasks.data.sources import cord_json

        return cord_json.load(str(arg), p.render_max_side)
    from tasks.data.sources import hf

    return hf.load(arg)


def dvc_add(path: Path, repo: Path) -> str:
    """Record `path` in `<path>.dvc` and return its md5 (the data version)."""
    import yaml

    run_dvc(repo, "add", "--quiet", str(path.resolve().relative_to(repo.resolve())))
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
    ap = cli.parser(__doc__, paths=("data",))
    ap.add_argument(
        "--source",
        default=None,
        help="cord | synthetic | imagefolder:<dir> | cord-json:<dir> | hf:<id>",
    )
    ap.add_argument("--no-dvc", action="store_true", help="write the snapshot without `dvc add`")

    def body(a, p) -> str:
        out = Path(a.data)
        result = run_data(p.data, out, a.source, None if a.no_dvc else out.resolve().parent)
        md5 = f" (md5 {result['md5']})" if "md5" in result else ""
        return f"data: {result['records']} records from {result['source']} -> {out}{md5}"

    cli.run("data", ap, body, argv)


if __name__ == "__main__":
    main()
