"""Base stage: the model that training starts from.

`model.base: tiny` takes the embedded base that `make pretrain` trained to read
(models/tiny-reader, shipped in the repository the way a hub checkpoint ships), after
checking that it was pretrained with params.yaml's `pretrain` section. Any other value is a
hub id or path, recorded in `BASE` and loaded by later stages through `from_pretrained`.

Where the base's processor and config can be read here (always for tiny; for a hub base when
it is cached, a local path or the hub is reachable), every record's target is checked to
fit the base's positions with the image and prompt tokens: too long ones are named and the
stage fails before anything trains on them. The train stage repeats the check.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.io import atomic_dir, write_text_atomic
from tasks.model.modeling import (
    base_ref,
    check_targets_fit,
    dataset_fit_records,
    fit_images,
    load_processor,
    max_positions_of,
    resolve_base,
)

log = logging.getLogger(__name__)


def check_reader(params: Params, reader_dir: str | Path) -> dict:
    """The pretrained tiny base's report, if it was made from params.yaml's `pretrain` section."""
    report_path = Path(reader_dir) / "pretrain.json"
    if not report_path.is_file():
        raise FileNotFoundError(
            f"{reader_dir}: no pretrained tiny base (pretrain.json missing): run `make pretrain`"
        )
    report = json.loads(report_path.read_text())
    want = params.pretrain.digest()
    if report.get("params_digest") != want:
        raise ValueError(
            f"{reader_dir} was pretrained with other params (digest "
            f"{report.get('params_digest')}) than params.yaml's pretrain section ({want}): "
            "run `make pretrain`, or restore the pretrain section it was made with"
        )
    return report


def run_build_base(
    params: Params,
    dataset_dir: str | Path,
    out_dir: str | Path,
    reader_dir: str | Path | None = None,
) -> str:
    """The base stage: copy the pretrained tiny base or note the hub id; then check that every
    target fits it (TargetsTooLong names those that don't)."""
    from tasks.data.dataset import load_dataset_dir

    reader_dir = reader_dir or params.paths.reader
    out_dir = Path(out_dir)
    dd = load_dataset_dir(dataset_dir, decode_images=False)
    with atomic_dir(out_dir) as tmp:
        if params.model.base == "tiny":
            check_reader(params, reader_dir)
            shutil.copytree(reader_dir, tmp, dirs_exist_ok=True)
            where: tuple[str, str | None] = (str(tmp), None)
        else:
            write_text_atomic(tmp / "BASE", base_ref(params.model))
            where = (params.model.base, params.model.revision)
        try:
            processor = fit_images(load_processor(*where), params.model.image_fit)
            positions = max_positions_of(*where)
        except OSError as exc:  # a hub base that is neither cached nor reachable from here
            log.warning("base: target lengths not checked here (%s); train checks them", exc)
        else:
            skipped: list[str] = []
            check_targets_fit(
                processor,
                positions,
                params.ingest.prompt,
                dataset_fit_records(dd, processor),
                ocr=params.model.ocr_prompt,
                left_out=skipped if params.train.too_long == "skip" else None,
            )
            if skipped:
                log.warning(
                    "base: %d train record(s) longer than the base's %d positions will be left "
                    "out of training (train.too_long: skip): %s",
                    len(skipped),
                    positions,
                    ", ".join(skipped),
                )
    return resolve_base(params.model, out_dir)[0]


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Take the pretrained tiny base, or record the hub base; check target lengths.",
        paths=("dataset", "reader", "base"),
    )
    cli.run(
        "base",
        ap,
        lambda a, p: f"base: {run_build_base(p, a.dataset, a.base, a.reader)}",
        argv,
    )


if __name__ == "__main__":
    main()
