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

REPO = Path(__file__).resolve().parent.parent
JAVA_TOOLS = re.compile(r"^(java|javac|jar|jshell|keytool|jps|jstack|jcmd|jinfo|jmap|jrunscript|rmiregistry)")
RUN_COMMAND = "bash scripts/run.sh"

pytestmark = pytest.mark.timeout(1200)


def readme_run_command() -> str:
    """The set-up-and-run line of the README, so that the test follows the document."""
    readme = (REPO / "README.md").read_text()
    assert f"{RUN_COMMAND}  " in readme or f"{RUN_COMMAND} " in readme
    return RUN_COMMAND


def path_without_java(bin_dir: Path) -> str:
    """A PATH with every system command but Java's: a machine that has only Python."""
    bin_dir.mkdir()
    for system_dir in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in sorted(Path(system_dir).iterdir()) if Path(system_dir).is_dir() else []:
            target = bin_dir / tool.name
            if not JAVA_TOOLS.match(tool.name) and not target.exists():
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
    env = {
        "PATH": path_without_java(tmp_path / "bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHON": str(base_python),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(readme_run_command().split(), cwd=repo, env=env, capture_output=True, text=True, timeout=1100)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "no Java found; installing a Java 17 runtime" in output
    report = json.loads((repo / "output" / "_run_report.json").read_text())
    assert report["input"]["events"] > 0
    assert report["tables"]["songplays"] > 0
    for table in ("songplays", "users", "songs", "artists", "time"):
        assert (repo / "output" / table).is_dir()
