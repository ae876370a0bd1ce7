"""etl.py unchanged on another PySpark line: the same tables as on the pinned one?

Run from the repository root::

    .venv/bin/python bench/other_spark.py --pyspark 4.0.2 --input ../shared/data/sample

Installs PySpark ``--pyspark`` (and the job's other runtime pins from requirements.txt)
into a virtualenv of its own under ``bench/.cache/`` (once), runs the working tree's
``etl.py`` on ``--input`` with it and with the repository's ``.venv`` (the pinned line),
and compares the five tables row for row (``compare_tables.py``). Results go to
``bench/results/other_spark.json``; exit 1 if any table differs or a run fails.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import compare_tables
from run_bench import CACHE_DIR, ETL, PYTHON, REPO, RESULTS_DIR, etl, save_results

REQUIREMENTS = REPO / "requirements.txt"


def runtime_pins(pyspark: str) -> list[str]:
    """requirements.txt with the other PySpark (py4j is whatever that PySpark requires)."""
    pins = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not re.match(r"^(pyspark|py4j)\b", line):
            pins.append(line)
    return [f"pyspark=={pyspark}", *pins]


def python_with(pyspark: str) -> Path:
    venv = CACHE_DIR / f"pyspark-{pyspark}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *runtime_pins(pyspark)], check=True)
    return python


def run(python: Path, input_dir: Path, output: Path) -> dict:
    done = subprocess.run(
        [str(python), str(ETL), "--input", str(input_dir), "--output", str(output)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return {"exit_code": done.returncode, "stderr": done.stderr[-2000:]}
    report = json.loads((output / etl.REPORT_NAME).read_text())
    return {"exit_code": 0, "spark_version": report["spark_version"], "tables": report["tables"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyspark", default="4.0.2", help="the other PySpark version")
    parser.add_argument("--input", type=Path, default=REPO.parent / "shared" / "data" / "sample")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "other_spark.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="other-spark-") as work:
        outputs = {"pinned": Path(work) / "pinned", "other": Path(work) / "other"}
        runs = {
            "pinned": run(Path(PYTHON), args.input, outputs["pinned"]),
            "other": run(python_with(args.pyspark), args.input, outputs["other"]),
        }
        tables = {}
        if all(result["exit_code"] == 0 for result in runs.values()):
            for name in etl.TABLE_NAMES:
                diff = compare_tables.differences(outputs["other"], outputs["pinned"], name)
                tables[name] = "equal" if compare_tables.equal(diff) else diff
    same = bool(tables) and all(verdict == "equal" for verdict in tables.values())
    command = f"bench/other_spark.py --pyspark {args.pyspark} --input {args.input}"
    results = json.loads(
        json.dumps({"command": command, "runs": runs, "tables": tables, "same_tables": same}, default=str)
    )
    print(json.dumps(results, indent=2))
    save_results(results, args.results)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
