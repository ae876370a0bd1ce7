"""Running etl.py as a user does (a subprocess), and reading back what it wrote."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ETL = REPO / "etl.py"
JOB_TIMEOUT_SECONDS = 900
TABLES = ("songplays", "users", "songs", "artists", "time")


@dataclass
class JobResult:
    code: int
    stdout: str
    stderr: str
    report: dict | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def write_config(
    path: Path, input_uri: str = "", output_uri: str = "", spark: dict | None = None, extra: str = ""
) -> Path:
    """A dl.cfg like the shipped one, pointing where the test wants."""
    spark_lines = "\n".join(f"{key} = {value}" for key, value in (spark or {}).items())
    path.write_text(
        "[AWS]\nAWS_ACCESS_KEY_ID =\nAWS_SECRET_ACCESS_KEY =\nAWS_SESSION_TOKEN =\n\n"
        f"[PATHS]\nINPUT_DATA = {input_uri}\nOUTPUT_DATA = {output_uri}\n\n"
        f"[SPARK]\nspark.sql.shuffle.partitions = 4\n{spark_lines}\n{extra}\n"
    )
    return path


def run_job(
    *args: str, env: dict | None = None, report: Path | None = None, timeout: int = JOB_TIMEOUT_SECONDS
) -> JobResult:
    """python etl.py ARGS; the report is read back when --report was given and written."""
    command = [sys.executable, str(ETL), *args]
    if report is not None:
        command += ["--report", str(report)]
    environment = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=REPO)
    parsed = json.loads(report.read_text()) if report is not None and report.exists() else None
    return JobResult(done.returncode, done.stdout, done.stderr, parsed)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with the hash of its bytes: 'untouched' made checkable."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def count_lines(root: Path) -> int:
    """Non-blank lines of every *.json file below root: the records a run must account for."""
    return sum(
        1
        for path in root.rglob("*.json")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    )


def table_rows(spark, output: Path, table: str) -> list:
    """A table's rows, sorted, with partition columns included, for whole-table comparison."""
    frame = spark.read.parquet(str(output / table))
    return sorted((tuple(row) for row in frame.select(sorted(frame.columns)).collect()), key=repr)
