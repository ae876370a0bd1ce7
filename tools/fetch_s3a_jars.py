#!/usr/bin/env python3
"""Fetch the S3A connector jars (hadoop-aws + AWS SDK bundle) without a Maven repository.

PySpark's pip build ships the Hadoop client but no ``hadoop-aws``. The only registry reachable
here is PyPI, and the ``sagemaker-pyspark`` sdist happens to carry both jars under
``deps/jars/``. We download that sdist (never install it), extract just the two jars, check
their sha256 and delete the sdist. Idempotent: jars already present with the right hash are
left alone, so CI can call this on every run for free.

Usage: ``python tools/fetch_s3a_jars.py [--dest .jars]``; prints the two jar paths.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "sagemaker-pyspark"
SDIST_VERSION = "1.4.5"
SDIST_JAR_DIR = f"sagemaker_pyspark-{SDIST_VERSION}/deps/jars"
DEFAULT_DEST = Path(__file__).resolve().parent.parent / ".jars"

# sha256 of each jar as extracted from sagemaker_pyspark-1.4.5.tar.gz
# (sdist sha256 05ca2d5081d7138ce29a8fb0a9cba077f28c825288ed07aed46a82e63c0bf1fb).
JARS = {
    "hadoop-aws-3.3.1.jar": "6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e",
    "aws-java-sdk-bundle-1.11.901.jar": ("b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead"),
}
HASH_CHUNK = 1 << 20
PIP_TIMEOUT_S = 600


class FetchError(RuntimeError):
    """A failure that is reported as one line and a non-zero exit code."""


def sha256(path: Path) -> str:
    """Hash in chunks: the SDK bundle is ~180 MB."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def jars_ok(dest: Path) -> bool:
    """True when every jar is already in ``dest`` with the expected hash."""
    return all((dest / name).is_file() and sha256(dest / name) == digest for name, digest in JARS.items())


def download_sdist(workdir: Path) -> Path:
    """``pip download`` the sdist into ``workdir`` (no deps, no install) and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--dest",
        str(workdir),
        f"{SDIST_NAME}=={SDIST_VERSION}",
    ]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"pip download {SDIST_NAME}=={SDIST_VERSION} timed out after {PIP_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(f"pip download {SDIST_NAME}=={SDIST_VERSION} failed: {last}")
    archives = sorted(workdir.glob("sagemaker_pyspark-*.tar.gz"))
    if not archives:
        raise FetchError(f"pip download succeeded but no sdist found in {workdir}")
    return archives[0]


def extract_jars(sdist: Path, dest: Path) -> None:
    """Stream through the tarball and write only the wanted jars (atomically, via a temp name)."""
    wanted = {f"{SDIST_JAR_DIR}/{name}": name for name in JARS}
    found: set[str] = set()
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            name = wanted.get(member.name)
            if name is None or not member.isfile():
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            partial = dest / f".{name}.part"
            with source, partial.open("wb") as out:
                while chunk := source.read(HASH_CHUNK):
                    out.write(chunk)
            partial.replace(dest / name)
            found.add(name)
            if len(found) == len(JARS):
                break
    missing = sorted(set(JARS) - found)
    if missing:
        raise FetchError(f"{sdist.name} has no {', '.join(missing)} under {SDIST_JAR_DIR}/")


def fetch(dest: Path) -> list[Path]:
    """Make sure the jars are in ``dest``; return their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    if not jars_ok(dest):
        with tempfile.TemporaryDirectory(prefix="s3a-jars-") as tmp:
            extract_jars(download_sdist(Path(tmp)), dest)
        for name, digest in JARS.items():
            actual = sha256(dest / name)
            if actual != digest:
                (dest / name).unlink(missing_ok=True)
                raise FetchError(f"sha256 mismatch for {name}: got {actual}, expected {digest}")
    return [dest / name for name in JARS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="folder for the jars (default: .jars)",
    )
    args = parser.parse_args(argv)
    try:
        paths = fetch(args.dest.resolve())
    except (FetchError, OSError, tarfile.TarError) as exc:
        print(f"fetch_s3a_jars: error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
