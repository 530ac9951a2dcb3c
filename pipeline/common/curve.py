"""The data-efficiency curve's files (``govtune curve``, :mod:`pipeline.data_efficiency`) and what
the report shows of them.

The curve is opt-in and not a stage of ``dvc repro``: the report stage shows it when the file is
there (``dvc repro -f -s report`` after ``govtune curve``), marked stale when the train split or the
base model changed since it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.common.params import Params

OUT_JSON = Path("reports/data_efficiency.json")
OUT_PNG = Path("reports/data_efficiency.png")


def stale(curve: dict[str, Any], params: Params) -> list[str]:
    """What changed since the curve was made (the report marks it stale), empty if nothing."""
    from pipeline.common.tracking import dvc_md5

    out = []
    train = params.split.out_dir / "train.jsonl"
    if not train.is_file() or dvc_md5(train) != curve["inputs"]["train_md5"]:
        out.append("the train split")
    prov = params.base_model.out_dir / "provenance.json"
    if (
        not prov.is_file()
        or json.loads(prov.read_text())["output_files_sha256"]["model.safetensors"]
        != curve["inputs"]["base_model_sha256"]
    ):
        out.append("the base model")
    return out


def section(params: Params) -> dict[str, Any] | None:
    """The report's view of the curve: its points, the smallest fraction reaching 95 % of the full
    run's quality, its settings, and what changed since (None: no curve was made)."""
    if not OUT_JSON.is_file():
        return None
    curve = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    return {
        k: curve[k] for k in ("settings", "inputs", "base", "points", "smallest_fraction_reaching_95pct", "seconds")
    } | {"stale": stale(curve, params), "path": str(OUT_JSON)}
