"""The one harness every command line runs in.

    ap = cli.parser(__doc__, paths=("dataset", "adapter"))
    ap.add_argument(...)                      # the command's own options
    cli.run("train", ap, body, argv)          # body(args, params) -> the line to print

It adds `--params`, loads params.yaml once into the typed `Params`, fills every path option
left unset from params.yaml's `paths` section (the one place paths are declared: dvc.yaml
reads the same keys), and turns a `UserError` into one line on stderr, `<command>: <what>`,
with its exit code (2): never a traceback for a mistake the user can fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from tasks.core.config import Params, load_params
from tasks.core.errors import UserError
from tasks.core.io import quiet_telemetry

T = TypeVar("T")


def parser(description: str | None, paths: Iterable[str] = ()) -> argparse.ArgumentParser:
    """An ArgumentParser with `--params` and one `--<path>` option per `paths` key."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml", help="the params file (params.yaml)")
    for key in paths:
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, help=f"default: paths.{key}")
    return ap


def fill_paths(args: argparse.Namespace, params: Params) -> argparse.Namespace:
    """Path options the user left unset take params.yaml's `paths` values."""
    for key, value in params.paths.model_dump().items():
        if getattr(args, key, False) is None:
            setattr(args, key, value)
    return args


def run(
    name: str,
    ap: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace, Params], str | None],
    argv: list[str] | None = None,
    log_format: str = "%(message)s",
) -> None:
    """Parse `argv`, load the params, run `body`; print what it returns. A UserError (bad
    source, params, image or model URI; a missing champion) exits with one line."""
    quiet_telemetry()
    # This project's own INFO lines; the libraries' (Great Expectations' registry, MLflow's
    # store setup) only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format=log_format)
    for ours in ("tasks", "flows", "__main__"):
        logging.getLogger(ours).setLevel(logging.INFO)
    args = ap.parse_args(argv)

    def load_and_run() -> str | None:
        params = load_params(args.params)
        return body(fill_paths(args, params), params)

    said = guard(name, load_and_run)
    if said:
        print(said, flush=True)


def guard(name: str, fn: Callable[[], T]) -> T:
    """fn(), with a UserError said as one line on stderr (`<name>: <what>`) and its exit code;
    a missing input file as one line and exit 2."""
    try:
        return fn()
    except UserError as exc:
        print(f"{name}: {one_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except FileNotFoundError as exc:  # an input path that is not there (a stage run out of order)
        print(
            f"{name}: {exc.filename or one_line(exc)}: no such file or directory", file=sys.stderr
        )
        sys.exit(2)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
