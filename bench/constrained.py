"""Constrained decoding to CORD's JSON schema: quality and cost, with and without, before and
after fine-tuning, on the same test split; and the backends that could hold it. Rewrites its
section of docs/benchmarks.md.

    python -m bench.constrained [--project .] [--doc docs/benchmarks.md] [--limit N]

The backends are Outlines' three for a JSON schema, each run in its own process capped at
BACKEND_MEMORY_GIB: llguidance and outlines_core are project dependencies; xgrammar is not
(it pulls ~1 GB of triton): `pip install xgrammar==0.2.9` to measure it too.

Needs the project's `make run` outputs (artifacts/dataset, base, adapter) and its params.yaml.
The base is the adapter's base with the adapter switched off (as evaluate does); answers are
scored with tasks.evaluation.metrics.score, as evaluate scores them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import machine

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- constrained-bench:start -->", "<!-- constrained-bench:end -->"
BACKENDS = ("llguidance", "outlines_core", "xgrammar")
# A backend's child process may use this much address space: a schema compilation may not fit
# (outlines_core asks for a single 4 GiB allocation on this schema; uncapped, on a 24 GiB
# machine, the process was killed).
BACKEND_MEMORY_GIB = 8
BACKEND_TIMEOUT_S = 900
METRICS = ("json_valid_rate", "ted_accuracy", "field_f1", "total_price_exact", "distinct_answers")


def backend_problem(name: str) -> str | None:
    """Why a backend cannot run here, or None."""
    try:
        __import__(name)  # each backend's module has its name
    except ImportError as exc:
        return f"not installed ({exc.name})"
    return None


def lm_format_enforcer_problem() -> str | None:
    try:
        import lmformatenforcer.integrations.transformers  # noqa: F401
    except ImportError as exc:  # it re-raises as "transformers is not installed"; say why
        cause = exc.__cause__ or exc.__context__ or exc
        return f"its transformers integration does not import: {cause}"
    return None


REPEATS = 3


def timed_answers(answer) -> tuple[list[str], float]:
    """The answers (greedy: the same each time) and the median seconds of REPEATS runs."""
    times, out = [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = answer()
        times.append(time.perf_counter() - start)
    return out, sorted(times)[len(times) // 2]


def _load(project: Path, limit: int):
    from tasks.core.config import load_params
    from tasks.data.dataset import load_dataset_dir
    from tasks.evaluate import load_for_inference

    params = load_params(project / "params.yaml")
    test = load_dataset_dir(project / "artifacts" / "dataset")["test"]
    if limit:
        test = test.select(range(min(limit, len(test))))
    images, gts = list(test["image"]), [json.loads(t) for t in test["target"]]
    model, processor = load_for_inference(
        params, project / "artifacts" / "base", project / "artifacts" / "adapter"
    )
    return params, images, gts, model, processor


def one_backend(project: Path, limit: int, backend: str) -> dict[str, Any]:
    """The fine-tuned model held to the schema by one backend: validity, samples/s, and the
    time to build the schema's processor."""
    from tasks.evaluation.metrics import score
    from tasks.inference.constrained import json_schema_processor
    from tasks.inference.generation import generate

    params, images, gts, model, processor = _load(project, limit)
    e = params.evaluate
    start = time.perf_counter()
    json_schema_processor(model, processor, backend)
    build = time.perf_counter() - start
    generate(model, processor, images[:1], params.ingest.prompt, 8, 1, True, backend)  # warm-up
    out, seconds = timed_answers(
        lambda: generate(
            model,
            processor,
            images,
            params.ingest.prompt,
            e.max_new_tokens,
            e.batch_size,
            True,
            backend,
        )
    )
    return {
        "backend": backend,
        "schema_build_seconds": round(build, 2),
        "json_valid_rate": round(float(score(out, gts)["json_valid_rate"]), 4),
        "samples_per_second": round(len(images) / seconds, 2),
    }


def _capped() -> None:
    cap = BACKEND_MEMORY_GIB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def backend_in_child(project: Path, limit: int, backend: str) -> dict[str, Any]:
    """one_backend in its own process, capped in memory and time: a failure is a figure."""
    problem = backend_problem(backend)
    if problem:
        return {"backend": backend, "problem": problem}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "backend.json"
        cmd = [sys.executable, "-m", "bench.constrained", "--project", str(project)]
        cmd += ["--limit", str(limit), "--backend-only", backend, "--json", str(out)]
        try:
            proc = subprocess.run(
                cmd, preexec_fn=_capped, capture_output=True, text=True, timeout=BACKEND_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return {"backend": backend, "problem": f"over {BACKEND_TIMEOUT_S} s"}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return {
                "backend": backend,
                "problem": f"failed within {BACKEND_MEMORY_GIB} GiB: {tail[0][:160]}",
            }
        return json.loads(out.read_text())


def measure(project: Path, limit: int) -> dict[str, Any]:
    from tasks.data.receipt_json import schema_violations
    from tasks.evaluation.metrics import score
    from tasks.inference.generation import generate

    params, images, gts, model, processor = _load(project, limit)
    e = params.evaluate

    def run(held: bool) -> tuple[list[str], float]:
        return timed_answers(
            lambda: generate(
                model, processor, images, params.ingest.prompt, e.max_new_tokens, e.batch_size, held
            )
        )

    generate(model, processor, images[:1], params.ingest.prompt, 8, 1, True)  # warm-up
    rows = []
    for name in ("base", "fine-tuned"):
        for held in (False, True):
            if name == "base":
                with model.disable_adapter():
                    out, seconds = run(held)
            else:
                out, seconds = run(held)
            m = score(out, gts)
            parsed = [json.loads(o) for o in out if _is_json(o)]
            rows.append(
                {
                    "model": name,
                    "json_schema": held,
                    **{k: round(float(m[k]), 4) for k in METRICS},
                    "outside_schema": sum(1 for p in parsed if schema_violations(p)),
                    "answer_chars": round(sum(map(len, out)) / max(1, len(out))),
                    "samples_per_second": round(len(images) / seconds, 2),
                }
            )
            print("bench:", rows[-1], flush=True)
    backends: list[dict[str, Any]] = []
    for backend in BACKENDS:
        backends.append(backend_in_child(project, limit, backend))
        print("bench:", backends[-1], flush=True)
    backends.append(
        {"backend": "lm-format-enforcer 0.11.3", "problem": lm_format_enforcer_problem()}
    )
    return {
        "n": len(images),
        "max_new_tokens": e.max_new_tokens,
        "batch_size": e.batch_size,
        "rows": rows,
        "backends": backends,
    }


def _is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def render(r: dict[str, Any], seconds: float, date: str) -> str:
    lines = [
        START,
        "",
        f"Measured {date} on {machine()}.",
        "",
        "Command: `.venv/bin/python -m bench.constrained` after `make run` (default params; "
        f"the {r['n']} test receipts, greedy, batch {r['batch_size']}, up to "
        f"{r['max_new_tokens']} new tokens; samples/s: the median of {REPEATS} runs after a "
        "warm-up).",
        "",
        "| model | json_schema | json_valid | ted_accuracy | field_f1 | total exact "
        "| distinct | outside schema | answer chars | samples/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['model']} | {'on' if x['json_schema'] else 'off'} | {x['json_valid_rate']:.2f} "
            f"| {x['ted_accuracy']:.3f} | {x['field_f1']:.3f} | {x['total_price_exact']:.2f} "
            f"| {x['distinct_answers']:.2f} | {x['outside_schema']} | {x['answer_chars']} "
            f"| {x['samples_per_second']} |"
        )
    lines += ["", "Backends (fine-tuned model, json_schema on, the same receipts):", ""]
    lines += [
        "| backend | schema build (s) | json_valid | samples/s | note |",
        "|---|---:|---:|---:|---|",
    ]
    for b in r["backends"]:
        if "samples_per_second" in b:
            lines.append(
                f"| {b['backend']} | {b['schema_build_seconds']} | {b['json_valid_rate']:.2f} "
                f"| {b['samples_per_second']} | |"
            )
        else:
            lines.append(f"| {b['backend']} | – | – | – | {b.get('problem') or 'imports'} |")
    lines += ["", f"Whole benchmark: {seconds:.0f} s.", "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--project", default=str(REPO))
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--limit", type=int, default=0, help="at most this many test receipts")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--backend-only", default=None, help=argparse.SUPPRESS)  # the child's job
    args = ap.parse_args(argv)
    if args.backend_only:
        figures = one_backend(Path(args.project), args.limit, args.backend_only)
        Path(args.json).write_text(json.dumps(figures))
        return
    began = time.perf_counter()
    result = measure(Path(args.project), args.limit)
    section = render(result, time.perf_counter() - began, dt.date.today().isoformat())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    doc = Path(args.doc)
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n## Constrained decoding (CORD's JSON schema)\n\n{START}\n{END}\n"
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    doc.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
