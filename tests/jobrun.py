"""Running etl.py as a user does (a subprocess), and reading back what it wrote."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow
import pyarrow.parquet

import etl

REPO = Path(__file__).resolve().parent.parent
ETL = REPO / "etl.py"
JOB_TIMEOUT_SECONDS = 900
TABLES = etl.TABLE_NAMES


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


# Hadoop's BlockCompressorStream framing of lz4 and snappy: per block the uncompressed
# length, then (length, bytes) chunks. Written here with one chunk per block.
HADOOP_BLOCK_BYTES = 64 * 1024
BLOCK_HEADER = struct.Struct(">i")


def hadoop_block_compress(data: bytes, codec: str) -> bytes:
    out = bytearray()
    for start in range(0, len(data), HADOOP_BLOCK_BYTES):
        block = data[start : start + HADOOP_BLOCK_BYTES]
        chunk = pyarrow.compress(block, codec=codec, asbytes=True)
        out += BLOCK_HEADER.pack(len(block)) + BLOCK_HEADER.pack(len(chunk)) + chunk
    return bytes(out)


def hadoop_block_decompress(data: bytes, codec: str) -> bytes:
    out, offset = bytearray(), 0
    while offset < len(data):
        (size,), (chunk_size,) = BLOCK_HEADER.unpack_from(data, offset), BLOCK_HEADER.unpack_from(data, offset + 4)
        chunk = data[offset + 8 : offset + 8 + chunk_size]
        block = pyarrow.decompress(chunk, decompressed_size=size, codec=codec, asbytes=True)
        if len(block) != size:  # a block of several chunks: not what hadoop_block_compress writes
            raise ValueError(f"unsupported {codec} block framing at byte {offset}")
        out += block
        offset += 8 + chunk_size
    return bytes(out)


# (compress, decompress) by file extension, as Hadoop picks its codec by extension.
CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    ".gz": (gzip.compress, gzip.decompress),
    ".bz2": (bz2.compress, bz2.decompress),
    ".deflate": (zlib.compress, zlib.decompress),  # Hadoop's DefaultCodec: a zlib stream
    ".lz4": (
        lambda data: hadoop_block_compress(data, "lz4_raw"),
        lambda data: hadoop_block_decompress(data, "lz4_raw"),
    ),
    ".snappy": (
        lambda data: hadoop_block_compress(data, "snappy"),
        lambda data: hadoop_block_decompress(data, "snappy"),
    ),
}
INPUT_SUFFIXES = (".json", *(f".json{suffix}" for suffix in CODECS))
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # Hadoop's line reader: not str.splitlines(), which splits at U+2028 too


def compress(path: Path, suffix: str) -> Path:
    """path (plain JSON lines) replaced by its compressed copy path + suffix."""
    target = path.with_name(path.name + suffix)
    target.write_bytes(CODECS[suffix][0](path.read_bytes()))
    path.unlink()
    return target


def decompressed(path: Path) -> bytes:
    codec = CODECS.get(path.suffix)
    return codec[1](path.read_bytes()) if codec else path.read_bytes()


def is_input_file(path: Path, root: Path) -> bool:
    """What the job reads below song_data/ or log_data/: JSON, plain or compressed, not hidden."""
    hidden = any(part.startswith((".", "_")) for part in path.relative_to(root).parts)
    return path.is_file() and path.name.endswith(INPUT_SUFFIXES) and not hidden


def record_lines(path: Path) -> list[str]:
    """A file's records: its lines, decompressed by extension, split as Hadoop splits them; blank ones left out."""
    text = decompressed(path).decode("utf-8", errors="replace")
    return [line for line in LINE_BREAK.split(text) if line.strip(" ")]


def count_lines(root: Path) -> int:
    """Records of every input file below root: what a run must account for, counted without the job."""
    return sum(len(record_lines(path)) for path in sorted(root.rglob("*")) if is_input_file(path, root))


def table_rows(spark, output: Path, table: str) -> list:
    """A table's rows, sorted, with partition columns included, for whole-table comparison."""
    frame = spark.read.parquet(str(output / table))
    return sorted((tuple(row) for row in frame.select(sorted(frame.columns)).collect()), key=repr)


def parquet_rows(folder: Path) -> int:
    """Rows of every parquet file below folder, read from the files' footers, not from the job's counters."""
    return sum(pyarrow.parquet.ParquetFile(path).metadata.num_rows for path in folder.rglob("*.parquet"))


def rejected_records(output: Path, dataset: str, run_id: str) -> list[dict]:
    """What a run wrote to _rejected/<dataset>/run_id=<run>/, read as plain JSON lines."""
    folder = output / "_rejected" / dataset / f"run_id={run_id}"
    # Spark's JSON writer keeps U+2028 and U+0085 unescaped, so str.splitlines() would cut records
    return [
        json.loads(line)
        for path in sorted(folder.glob("part-*"))
        for line in path.read_text("utf-8").split("\n")
        if line
    ]


USED_IN = {"songs": "songs", "events": "songplays"}  # the table a dataset's used records become


def assert_accounted(report: dict, output: Path, lines: dict[str, int], rows_before: dict[str, int] | None = None):
    """read = used + rejected + excluded, against counts taken outside the job.

    lines: each dataset's records counted in the input files (count_lines); used is
    checked against the rows the run added to its table (parquet footers, minus
    rows_before for a daily run), rejected against the lines in the run's _rejected/
    folder, so excluded is what is left and must be all of it.
    """
    for dataset, read in lines.items():
        books = report["accounting"][dataset]
        used = parquet_rows(output / USED_IN[dataset]) - (rows_before or {}).get(dataset, 0)
        rejected = len(rejected_records(output, dataset, report["run_id"]))
        assert (report["input"][dataset], books["read"]) == (read, read), (dataset, books, read)
        assert (books["used"], books["rejected"]) == (used, rejected), (dataset, books, used, rejected)
        assert used + rejected + books["excluded"] == read, (dataset, books, read)
        assert books["excluded"] == sum(report["excluded"][dataset]["by_reason"].values()) >= 0, (dataset, report)


def run_settings(
    input_dir: Path,
    output_dir: Path,
    *,
    incremental: bool = False,
    max_reject_rate: float = 0.05,
    config: Path | None = None,
    checks: bool = True,
):
    """Settings of an in-process etl.run over local folders, no credentials (the default chain).

    checks=False is what `[QUALITY] CHECKS = off` gives: for the crash-and-repair runs, which
    are about what a run leaves behind, not about the checks (tests/test_quality.py has
    those; the month-long daily series and every `python etl.py` run keep them on). The
    checks are about half of a small run's time.
    """
    import etl

    return etl.Settings(
        config_path=str(config or input_dir / "dl.cfg"),
        input_uri=str(input_dir),
        output_uri=str(output_dir),
        report_path=None,
        max_reject_rate=max_reject_rate,
        aws=dict.fromkeys(etl.AWS_KEYS, ""),
        incremental=incremental,
        quality=etl.quality_settings({} if checks else {etl.QUALITY_SWITCH: "off"}, "tests"),
    )
