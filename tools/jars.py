#!/usr/bin/env python3
"""Resolve the job's JVM parts (jars.txt) by Maven coordinates, the way a Spark user does.

Spark's own resolver does the work: a JVM is started through PySpark's launcher with
``spark.jars.packages`` = the packages of jars.txt, ``spark.jars.excludes`` = its ``!``
lines and ``spark.jars.ivy`` = the repo's ``.cache/ivy`` (gitignored), and the resolved
jar list is read back. Jars land in ``.cache/ivy/jars/``; a manifest keyed by jars.txt's
hash makes a second call start no JVM at all, and a second resolution (e.g. a job whose
dl.cfg names the packages) finds everything in the cache and downloads nothing.

If Spark's resolver cannot reach the repository, ``--mvn`` (or the automatic fallback)
copies the same packages with ``mvn dependency:copy`` (intransitive) into ``.jars/``.

    python tools/jars.py                 # resolve if needed; print one jar path a line
    python tools/jars.py --spark-conf    # the [SPARK] lines that name the packages (dl.cfg)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JARS_FILE = REPO / "jars.txt"
# SPARKIFY_IVY_DIR: another Ivy cache, e.g. a fresh copy of the repo reusing this one's.
IVY_DIR = Path(os.environ.get("SPARKIFY_IVY_DIR") or REPO / ".cache" / "ivy")
MVN_DIR = REPO / ".jars"
MVN_TIMEOUT_S = 900


class JarsError(RuntimeError):
    """Resolution failed; the message says why."""


def read_pins(path: Path = JARS_FILE) -> tuple[list[str], list[str]]:
    """(packages as group:artifact:version, exclusions as group:artifact) from jars.txt."""
    packages: list[str] = []
    excludes: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("!"):
            if line[1:].count(":") != 1:
                raise JarsError(f"{path.name}: an exclusion is group:artifact, got {line!r}")
            excludes.append(line[1:])
        elif line.count(":") == 2:
            packages.append(line)
        else:
            raise JarsError(f"{path.name}: a package is group:artifact:version, got {line!r}")
    return packages, excludes


def pins_hash(path: Path = JARS_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def spark_conf(ivy_dir: Path = IVY_DIR, path: Path = JARS_FILE) -> dict[str, str]:
    """The Spark properties that make Spark resolve jars.txt itself (put them in [SPARK])."""
    packages, excludes = read_pins(path)
    conf = {"spark.jars.packages": ",".join(packages), "spark.jars.ivy": str(ivy_dir)}
    if excludes:
        conf["spark.jars.excludes"] = ",".join(excludes)
    return conf


def _manifest(ivy_dir: Path, path: Path) -> Path:
    return ivy_dir / f"resolved-{pins_hash(path)}.txt"


def resolve_with_spark(ivy_dir: Path = IVY_DIR, path: Path = JARS_FILE) -> list[Path]:
    """Run Spark's resolver (SparkSubmit's Ivy) in a short-lived JVM; return the jar paths."""
    from pyspark import SparkConf
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf(loadDefaults=False)
    for key, value in spark_conf(ivy_dir, path).items():
        conf.set(key, value)
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stdout": sys.stderr})  # Ivy's report: not our output
    except Exception as exc:  # the launcher reports a failed resolution as a dead JVM
        raise JarsError(f"Spark's resolver failed ({exc}); its Ivy log is above") from exc
    try:
        listed = gateway.jvm.java.lang.System.getProperty("spark.jars") or ""
    finally:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.stdin.close()
            proc.wait()
    jars = [Path(item.removeprefix("file://").removeprefix("file:")) for item in listed.split(",") if item]
    if not jars:
        raise JarsError("Spark's resolver returned no jars")
    return jars


def copy_with_mvn(dest: Path = MVN_DIR, path: Path = JARS_FILE) -> list[Path]:
    """Fallback: ``mvn dependency:copy`` of each package (no transitive ones) into ``dest``."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsError("no mvn on PATH for the fallback")
    packages, _ = read_pins(path)
    dest.mkdir(parents=True, exist_ok=True)
    jars = []
    for coordinate in packages:
        group, artifact, version = coordinate.split(":")
        target = dest / f"{group}_{artifact}-{version}.jar"
        if not target.is_file():
            cmd = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={dest}"]
            cmd.append("-Dmdep.stripVersion=false")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=MVN_TIMEOUT_S)
            plain = dest / f"{artifact}-{version}.jar"
            if proc.returncode != 0 or not plain.is_file():
                raise JarsError(f"mvn dependency:copy {coordinate} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            plain.replace(target)  # Spark's naming, so both ways give the same file names
        jars.append(target)
    return jars


def jar_paths(ivy_dir: Path = IVY_DIR, path: Path = JARS_FILE, use_mvn: bool = False) -> list[Path]:
    """The resolved jars of jars.txt, resolving only when the manifest is missing or stale."""
    manifest = _manifest(ivy_dir, path)
    if manifest.is_file():
        jars = [Path(line) for line in manifest.read_text().splitlines() if line]
        if jars and all(jar.is_file() for jar in jars):
            return jars
    if use_mvn:
        jars = copy_with_mvn(path=path)
    else:
        try:
            jars = resolve_with_spark(ivy_dir, path)
        except JarsError as exc:
            print(f"jars: {exc}; falling back to mvn dependency:copy into {MVN_DIR}", file=sys.stderr)
            jars = copy_with_mvn(path=path)
    ivy_dir.mkdir(parents=True, exist_ok=True)
    for old in ivy_dir.glob("resolved-*.txt"):
        old.unlink()
    manifest.write_text("".join(f"{jar}\n" for jar in jars))
    return jars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mvn", action="store_true", help="copy with mvn instead of Spark's resolver")
    parser.add_argument("--spark-conf", action="store_true", help="print the [SPARK] lines for dl.cfg")
    args = parser.parse_args(argv)
    try:
        if args.spark_conf:
            for key, value in spark_conf().items():
                print(f"{key} = {value}")
            return 0
        for jar in jar_paths(use_mvn=args.mvn):
            print(jar)
    except (JarsError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"jars: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sys.exit(main())
