"""Base stage: the model that training starts from.

`model.base: tiny` builds the embedded LLaVA from params (its tokenizer trained on the
train targets); any other value is a hub id or path, recorded in `BASE` and loaded by
later stages through `from_pretrained`.

Where the base's processor and config can be read here (always for tiny; for a hub base when
it is cached, a local path or the hub is reachable), every record's target is checked to
fit the base's positions with the image and prompt tokens: too long ones are named and the
stage fails before anything trains on them. The train stage repeats the check.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tasks.config import Params, load_params
from tasks.io import atomic_dir, quiet_telemetry, write_text_atomic
from tasks.modeling import (
    TargetsTooLong,
    base_ref,
    build_tiny,
    check_targets_fit,
    dataset_fit_records,
    fit_images,
    load_processor,
    max_positions_of,
    resolve_base,
)

log = logging.getLogger(__name__)


def run_build_base(params: Params, dataset_dir: str | Path, out_dir: str | Path) -> str:
    """The base stage: build the tiny model (tokenizer trained on train targets) or note the hub
    id; then check that every target fits it (TargetsTooLong names those that don't)."""
    from tasks.dataset import load_dataset_dir

    out_dir = Path(out_dir)
    dd = load_dataset_dir(dataset_dir, decode_images=False)
    with atomic_dir(out_dir) as tmp:
        if params.model.base == "tiny":
            texts = list(dd["train"]["target"]) + [params.ingest.prompt, "USER: ASSISTANT:"]
            build_tiny(params.model.tiny, texts, tmp)
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
            check_targets_fit(
                processor, positions, params.ingest.prompt, dataset_fit_records(dd, processor)
            )
    return resolve_base(params.model, out_dir)[0]


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description="Build the tiny base, or record the hub base.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", default="artifacts/dataset")
    ap.add_argument("--base", default="artifacts/base")
    args = ap.parse_args(argv)
    try:
        print("base:", run_build_base(load_params(args.params), args.dataset, args.base))
    except TargetsTooLong as exc:
        print(f"base: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
