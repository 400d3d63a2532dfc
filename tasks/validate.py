"""Validate stage: a Great Expectations suite over a per-record table of the processed dataset.

Writes reports/validation.json (success, each expectation's result, offending record
ids with the reason) and Data Docs HTML. Any failed expectation fails the stage with
a message naming the records, so `dvc repro` stops before training.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core import cli
from tasks.core.config import ValidateParams
from tasks.core.errors import Refused
from tasks.core.io import atomic_dir, write_json_atomic
from tasks.data.dataset import SPLITS, load_dataset_dir
from tasks.data.receipt_json import price_violations, schema_violations, type_violations


class ValidationFailed(Refused):
    pass


def record_table(dataset_dir: str | Path) -> pd.DataFrame:
    """One row per record: the facts each expectation checks, plus the reason for each."""
    from PIL import Image

    rows = []
    dd = load_dataset_dir(dataset_dir, decode_images=False)
    for split in dd:
        for r in dd[split]:
            data = r["image"]["bytes"] or b""
            row: dict[str, Any] = {
                "id": r["id"],
                "split": split,
                "image_sha256": hashlib.sha256(data).hexdigest(),
                "image_decodes": False,
                "width": None,
                "height": None,
                "image_error": "",
                "target": r["target"],
            }
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    row.update(image_decodes=True, width=im.width, height=im.height)
            except Exception as exc:  # PIL raises several types for bad bytes
                row["image_error"] = (
                    f"image: does not decode ({type(exc).__name__}: {str(exc)[:200]})"
                    if data
                    else "image: empty file (0 bytes)"
                )
            gt_error = r["gt_error"]
            row["gt_is_json"] = not gt_error.startswith("ground_truth: not JSON")
            row["has_gt_parse"] = not gt_error
            row["gt_error"] = gt_error
            row["annotation_sha256"] = annotation_digest(r["ground_truth"])
            gt = json.loads(r["target"]) if r["target"] else None
            schema_bad = schema_violations(gt) if gt is not None else []
            price_bad = price_violations(gt) if gt is not None else []
            row["schema_ok"], row["schema_error"] = not schema_bad, "; ".join(schema_bad)
            row["prices_ok"], row["price_error"] = not price_bad, "; ".join(price_bad)
            type_bad = type_violations(gt) if gt is not None else []
            row["types_ok"], row["type_error"] = not type_bad, "; ".join(type_bad)
            rows.append(row)
    return pd.DataFrame(rows)


def annotation_digest(ground_truth: str) -> str | None:
    """The content of a word-level annotation (each word's text and quad, in order), hashed: the
    same receipt twice, even when its rendered images differ (each rendering gets paper
    texture seeded by its record id, so image hashes never match). None without valid_line."""
    try:
        lines = json.loads(ground_truth).get("valid_line")
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(lines, list) or not lines:
        return None
    words = [
        [w.get("text"), w.get("quad")]
        for line in lines
        if isinstance(line, dict)
        for w in line.get("words") or []
        if isinstance(w, dict)
    ]
    return hashlib.sha256(json.dumps(words, sort_keys=True).encode()).hexdigest()


def split_table(records: pd.DataFrame, carves: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per split: its size, and a note naming the carve that made or shrank it."""
    counts = records["split"].value_counts() if len(records) else pd.Series(dtype=int)
    n = {s: int(counts.get(s, 0)) for s in SPLITS}
    notes = {s: f"{n[s]} records" for s in SPLITS}
    for c in carves or []:
        param = f"ingest.{c['param']}"
        if c["moved"]:
            notes[c["into"]] += f" (carved from train by {param}={c['asked']})"
            notes[c["from"]] += (
                f" (after {c['moved']} of its {c['train_before']} were carved into"
                f" {c['into']} by {param})"
            )
        else:
            notes[c["into"]] += (
                f" (the source has no {c['into']} split and train's {c['train_before']}"
                f" are too few to carve {param}={c['asked']})"
            )
    return pd.DataFrame(
        {"split": list(SPLITS), "n": [n[s] for s in SPLITS], "note": [notes[s] for s in SPLITS]}
    )


def read_carves(dataset_dir: str | Path) -> list[dict[str, Any]]:
    """What ingest carved (tasks.ingest.CARVE_FILE); none for datasets written before it."""
    path = Path(dataset_dir) / "carve.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _suites(p: ValidateParams):
    """The two expectation suites, each expectation carrying the column that explains a failure."""
    import great_expectations.expectations as gxe

    def why(reason_column: str, rule: str) -> dict[str, str]:
        return {"reason_column": reason_column, "rule": rule}

    def must_hold(flag_column: str, reason_column: str, rule: str):
        """A per-record boolean check: every row's flag is True."""
        return gxe.ExpectColumnValuesToBeInSet(
            column=flag_column, value_set=[True], meta=why(reason_column, rule)
        )

    records = [
        must_hold("image_decodes", "image_error", "the image decodes"),
        gxe.ExpectColumnValuesToBeBetween(
            column="width",
            min_value=p.min_width,
            max_value=p.max_width,
            meta=why("width", "image width in range"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="height",
            min_value=p.min_height,
            max_value=p.max_height,
            meta=why("height", "image height in range"),
        ),
        must_hold("gt_is_json", "gt_error", "ground truth parses as JSON"),
        must_hold("has_gt_parse", "gt_error", "ground truth has gt_parse"),
        must_hold("schema_ok", "schema_error", "gt_parse keys within CORD's schema"),
        must_hold("prices_ok", "price_error", "price fields parse as non-negative numbers"),
        must_hold("types_ok", "type_error", "values are strings, counts and prices one each"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="target", min_value=3, meta=why("gt_error", "target is not empty")
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="image_sha256", meta=why("split", "no image duplicated within or across splits")
        ),
        # null (no word-level annotation: synthetic, cord-v2) is not checked
        gxe.ExpectColumnValuesToBeUnique(
            column="annotation_sha256",
            meta=why(
                "split", "no annotation (words and their boxes) duplicated in or across splits"
            ),
        ),
    ]
    splits = [
        gxe.ExpectColumnValuesToBeBetween(
            column="n",
            min_value=max(1, p.min_split_size),
            max_value=p.max_split_size,
            meta=why("note", "every split non-empty and within bounds"),
        ),
    ]
    return {"records": records, "splits": splits}


def run_suites(
    tables: dict[str, pd.DataFrame], p: ValidateParams, docs_dir: Path | None
) -> list[dict]:
    """Run the suites with Great Expectations; return one summary per expectation."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name="local",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = ctx.data_sources.add_pandas("receipts")
    out = []
    for name, expectations in _suites(p).items():
        key = "id" if name == "records" else "split"
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")] if docs_dir else [],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key]},
            )
        )
        table = tables[name]
        result = checkpoint.run(batch_parameters={"dataframe": table})
        for run in result.run_results.values():
            for r in run.results:
                cfg = r.expectation_config
                assert cfg is not None  # set on every result of a suite run
                reason_col = cfg.meta["reason_column"]
                offenders = []
                for hit in r.result.get("unexpected_index_list") or []:
                    match = table[table[key] == hit[key]].iloc[0]
                    offenders.append(
                        {key: hit[key], "split": match["split"], "reason": str(match[reason_col])}
                    )
                out.append(
                    {
                        "table": name,
                        "expectation": cfg.type,
                        "column": cfg.kwargs.get("column"),
                        "rule": cfg.meta["rule"],
                        "success": bool(r.success),
                        "unexpected_count": int(r.result.get("unexpected_count") or 0),
                        "offending": offenders,
                    }
                )
    return out


def run_validate(
    p: ValidateParams,
    dataset_dir: str | Path,
    report_path: str | Path,
    docs_dir: str | Path | None = None,
) -> dict:
    """Validate the dataset; write the report (and Data Docs); raise ValidationFailed naming records."""
    records = record_table(dataset_dir)
    tables = {"records": records, "splits": split_table(records, read_carves(dataset_dir))}
    if docs_dir is not None:
        with atomic_dir(docs_dir) as tmp:
            results = run_suites(tables, p, tmp)
    else:
        results = run_suites(tables, p, None)
    report = {
        "success": all(r["success"] for r in results),
        "records": int(len(records)),
        "splits": dict(
            zip(tables["splits"]["split"], map(int, tables["splits"]["n"]), strict=False)
        ),
        "expectations": results,
    }
    write_json_atomic(report_path, report)
    if not report["success"]:
        lines = []
        for r in results:
            if not r["success"]:
                shown = "; ".join(
                    f"{o.get('id', o.get('split'))}: {o['reason']}" for o in r["offending"][:20]
                )
                more = f" (+{len(r['offending']) - 20} more)" if len(r["offending"]) > 20 else ""
                lines.append(
                    f"- {r['rule']} [{r['expectation']} on {r['column']}]: "
                    f"{r['unexpected_count']} failing: {shown}{more}"
                )
        raise ValidationFailed(
            f"validation failed (full report in {report_path}):\n" + "\n".join(lines)
        )
    return report


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Validate the processed dataset with Great Expectations.",
        paths=("dataset", "validation", "data_docs"),
    )

    def body(a, p) -> str:
        report = run_validate(p.validate_, a.dataset, a.validation, a.data_docs)
        return f"validate: {report['records']} records pass ({report['splits']}) -> {a.validation}"

    cli.run("validate", ap, body, argv)


if __name__ == "__main__":
    main()
