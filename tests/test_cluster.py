"""The job unchanged on a Spark standalone cluster, submitted the way a user ships it:
etl.py and dl.cfg in a folder, `spark-submit --master spark://... --files dl.cfg etl.py`
(client mode), local and s3a:// input and output alike; the tables equal a local run's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from infra import S3Server, spark_env, spark_home
from jobrun import ETL, TABLES, write_config
from test_s3 import SAMPLE_DATA, SECRET_KEY, assert_same_tables, download, new_bucket, s3_config

pytestmark = pytest.mark.timeout(900)

SUBMIT_TIMEOUT_S = 600


def submit(master: str, workdir: Path, jars: list[Path] | None = None) -> subprocess.CompletedProcess:
    """spark-submit from a folder holding only etl.py and dl.cfg, as a user would run it."""
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        *("--master", master, "--deploy-mode", "client"),
        *("--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false"),
        *("--files", "dl.cfg"),
    ]
    if jars:
        command += ["--jars", ",".join(str(jar) for jar in jars)]
    command.append("etl.py")
    return subprocess.run(
        command,
        cwd=workdir,
        env=spark_env({"TMPDIR": str(workdir.parent)}),
        capture_output=True,
        text=True,
        timeout=SUBMIT_TIMEOUT_S,
        check=False,
    )


def shipped_folder(root: Path) -> Path:
    """A fresh folder with a copy of etl.py; the test writes dl.cfg beside it."""
    workdir = root / "ship"
    workdir.mkdir()
    shutil.copy(ETL, workdir / "etl.py")
    return workdir


def assert_succeeded(proc: subprocess.CompletedProcess, master) -> None:
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{master.logs()}"
    assert "error:" not in proc.stderr
    with urllib.request.urlopen(f"{master.webui_url}/json/", timeout=10) as answer:
        apps = json.load(answer)
    names = [app["name"] for app in apps.get("completedapps", []) + apps.get("activeapps", [])]
    assert "sparkify-etl" in names, f"the job did not run on {master}: {names}"


@pytest.fixture(scope="module")
def sample_local(sample_data_run) -> Path:
    """The reference: python etl.py over sample_data in local mode (the session's shared run)."""
    return sample_data_run[0]


def test_local_paths_on_a_standalone_cluster(tmp_path, spark_cluster, sample_local, spark):
    workdir = shipped_folder(tmp_path)
    output = tmp_path / "out"
    write_config(workdir / "dl.cfg", str(SAMPLE_DATA), str(output))
    proc = submit(spark_cluster, workdir)
    assert_succeeded(proc, spark_cluster)
    assert "songplays" in proc.stdout  # the summary table
    assert_same_tables(spark, sample_local, output)


def test_s3a_on_a_standalone_cluster(tmp_path, spark_cluster, s3_server: S3Server, s3a_jars, sample_local, spark):
    in_bucket, out_bucket = new_bucket("cluster-in"), new_bucket("cluster-out")
    s3_server.upload_tree(SAMPLE_DATA, in_bucket, "data")
    s3_server.create_bucket(out_bucket)
    workdir = shipped_folder(tmp_path)
    s3_config(workdir / "dl.cfg", f"s3a://{in_bucket}/data", f"s3a://{out_bucket}/lake", s3_server.endpoint, s3a_jars)
    proc = submit(spark_cluster, workdir, jars=s3a_jars)
    assert_succeeded(proc, spark_cluster)
    assert SECRET_KEY not in proc.stdout + proc.stderr
    downloaded = download(s3_server, out_bucket, "lake", tmp_path / "downloaded")
    assert (downloaded / "_run_report.json").is_file()
    assert_same_tables(spark, sample_local, downloaded)
    for table in TABLES:  # committed by S3A's magic committer: its _SUCCESS is a JSON manifest
        success = json.loads((downloaded / table / "_SUCCESS").read_text())
        assert success["committer"] == "magic", (table, success)
