"""The job against a real S3 endpoint (moto over HTTP on loopback), run as a user runs it.

s3a:// and s3:// in and out give exactly the tables of a local run; the secret key shows up
nowhere; the write costs a few requests per file and never a COPY; storage mistakes (wrong
keys, a missing bucket, an endpoint nobody answers on) end quickly with one line, exit 2,
and the old tables untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO
from infra import CountingProxy, S3Server, free_port, start_s3_server
from jobrun import TABLES, run_job, run_settings, table_rows, tree_digest, write_config

import etl

pytestmark = pytest.mark.timeout(900)

SAMPLE_DATA = REPO / "sample_data"
ACCESS_KEY = "AKIASPARKIFYTESTKEY1"
# Unique per test session, so a hit can only come from this run's configuration.
SECRET_KEY = f"sparkify-test-secret-{uuid.uuid4().hex}"
SESSION_TOKEN = f"sparkify-test-token-{uuid.uuid4().hex}"
MAX_REQUESTS_PER_WRITTEN_FILE = 8
FAILURE_SECONDS = 120


# --------------------------------------------------------------------------- helpers


def new_bucket(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:10]}"


def s3_config(
    path: Path,
    input_uri: str,
    output_uri: str,
    endpoint: str,
    jars: list[Path],
    secret: str = SECRET_KEY,
    token: str = "",
) -> Path:
    """A dl.cfg for an S3-compatible endpoint: dummy but recognisable keys, path style."""
    write_config(path, input_uri, output_uri, spark={"spark.jars": ",".join(str(jar) for jar in jars)})
    text = path.read_text().replace(
        "AWS_ACCESS_KEY_ID =\nAWS_SECRET_ACCESS_KEY =\nAWS_SESSION_TOKEN =\n",
        f"AWS_ACCESS_KEY_ID = {ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY = {secret}\nAWS_SESSION_TOKEN = {token}\n",
    )
    assert secret in text
    path.write_text(text + f"\n[S3]\nENDPOINT = {endpoint}\nPATH_STYLE_ACCESS = true\n")
    return path


def list_objects(server: S3Server, bucket: str, prefix: str = "") -> dict[str, str]:
    """key -> ETag of every object under the prefix."""
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"]: obj["ETag"] for page in pages for obj in page.get("Contents", [])}


def download(server: S3Server, bucket: str, prefix: str, dest: Path) -> Path:
    """Every object under s3://bucket/prefix/ into dest/ (directory markers skipped)."""
    client = server.client()
    prefix = prefix.strip("/") + "/"
    for key in list_objects(server, bucket, prefix):
        if key.endswith("/"):
            continue
        target = dest / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))
    return dest


def local_run(spark, input_dir: Path, output: Path) -> dict:
    """The reference: the same input, local in and out, run in this process (no S3 involved)."""
    return etl.run(spark, run_settings(input_dir, output))


def assert_same_tables(spark, expected: Path, actual: Path) -> None:
    for table in TABLES:
        assert table_rows(spark, actual, table) == table_rows(spark, expected, table), table


def files_containing(root: Path, needle: str) -> list[str]:
    """Files below root whose bytes contain needle."""
    data = needle.encode()
    return [str(path) for path in root.rglob("*") if path.is_file() and data in path.read_bytes()]


def newest_run_log(tmpdir: Path) -> Path:
    logs = sorted((tmpdir / "sparkify-etl").glob("run-*.log"), key=lambda path: path.stat().st_mtime)
    assert logs, f"no run log under {tmpdir / 'sparkify-etl'}"
    return logs[-1]


def s3_run(tmp: Path, server: S3Server, input_dir: Path, jars, *, scheme="s3a", endpoint=None, token=""):
    """Upload input_dir to a fresh bucket and run the job scheme://in -> scheme://out.

    Returns (result, input bucket, output bucket, downloaded output folder, TMPDIR of the run).
    """
    in_bucket, out_bucket = new_bucket("in"), new_bucket("out")
    server.upload_tree(input_dir, in_bucket, "data")
    server.create_bucket(out_bucket)
    cfg = s3_config(
        tmp / "dl.cfg",
        f"{scheme}://{in_bucket}/data",
        f"{scheme}://{out_bucket}/lake",
        endpoint or server.endpoint,
        jars,
        token=token,
    )
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir()
    result = run_job("--config", str(cfg), env={"TMPDIR": str(tmpdir)})
    assert result.code == 0, result.output
    downloaded = download(server, out_bucket, "lake", tmp / "downloaded")
    return result, in_bucket, out_bucket, downloaded, tmpdir


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample_input(tmp_path_factory) -> Path:
    """The bundled sample plus one malformed event line and one song without a title."""
    root = tmp_path_factory.mktemp("sample-input") / "data"
    shutil.copytree(SAMPLE_DATA, root)
    log_file = sorted((root / "log_data").rglob("*.json"))[0]
    log_file.write_text(log_file.read_text() + '{"artist": "cut short\n')
    song_file = sorted((root / "song_data").rglob("*.json"))[0]
    song_file.write_text(json.dumps({**json.loads(song_file.read_text()), "title": None}) + "\n")
    return root


@pytest.fixture(scope="module")
def sample_local(spark, tmp_path_factory, sample_input) -> Path:
    output = tmp_path_factory.mktemp("sample-local") / "out"
    local_run(spark, sample_input, output)
    return output


@pytest.fixture(scope="module")
def sample_s3a(tmp_path_factory, s3_server: S3Server, s3a_jars, sample_input):
    """The sample s3a -> s3a through a counting proxy, once for the tests below."""
    tmp = tmp_path_factory.mktemp("sample-s3a")
    proxy = CountingProxy(s3_server.endpoint).start()
    try:
        result, in_bucket, out_bucket, downloaded, tmpdir = s3_run(
            tmp, s3_server, sample_input, s3a_jars, endpoint=proxy.endpoint
        )
        written = list_objects(s3_server, out_bucket)
        return {
            "input_uri": f"s3a://{in_bucket}/data",
            "result": result,
            "downloaded": downloaded,
            "tmpdir": tmpdir,
            "written": written,
            "write_counts": proxy.bucket_counts(out_bucket),
            "read_counts": proxy.bucket_counts(in_bucket),
            "all_counts": proxy.snapshot(),
        }
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- round trips


def test_s3a_in_s3a_out_equals_a_local_run(sample_s3a, sample_local, spark):
    assert_same_tables(spark, sample_local, sample_s3a["downloaded"])
    assert (sample_s3a["downloaded"] / "_run_report.json").is_file()
    assert all((sample_s3a["downloaded"] / table / "_SUCCESS").is_file() for table in TABLES)


def test_s3a_write_is_a_few_requests_per_file_and_no_copy(sample_s3a):
    counts, written = sample_s3a["write_counts"], sample_s3a["written"]
    assert written, "nothing was written"
    assert "COPY" not in sample_s3a["all_counts"], sample_s3a["all_counts"]
    assert "COPY_PART" not in sample_s3a["all_counts"], sample_s3a["all_counts"]
    per_file = sum(counts.values()) / len(written)
    print(
        f"{len(written)} objects written with {counts} ({per_file:.2f} per file); whole run {sample_s3a['all_counts']}"
    )
    assert per_file <= MAX_REQUESTS_PER_WRITTEN_FILE, f"{per_file:.1f} requests per file: {counts}"


def test_s3a_run_leaks_no_secret(sample_s3a):
    result, tmpdir = sample_s3a["result"], sample_s3a["tmpdir"]
    assert SECRET_KEY not in result.stdout
    assert SECRET_KEY not in result.stderr
    assert newest_run_log(tmpdir).is_file()
    assert files_containing(tmpdir, SECRET_KEY) == []  # run log and any staging leftovers
    assert (sample_s3a["downloaded"] / "_rejected").is_dir()
    assert files_containing(sample_s3a["downloaded"], SECRET_KEY) == []  # tables, _rejected, report
    assert not list(tmpdir.glob("sparkify-etl-staging-*")), "output staging folder left behind"
    assert not list(tmpdir.glob("sparkify-etl-input-*")), "input staging folder left behind"


def test_s3a_input_is_listed_flat_and_read_with_one_get_per_file(sample_s3a, sample_input):
    """Input staged through local disk: no per-folder listing, no existence probe per file."""
    files = [path for folder in ("song_data", "log_data") for path in (sample_input / folder).rglob("*.json")]
    counts = sample_s3a["read_counts"]
    print(f"{len(files)} input files read with {counts}")
    assert counts.get("GET") == len(files), counts
    assert counts.get("HEAD", 0) <= 4, counts  # the input folders' existence checks, not per file
    assert counts.get("LIST", 0) <= 8, counts


def rejects_of(output: Path) -> list[dict]:
    return sorted(
        (json.loads(line) for path in (output / "_rejected").rglob("*.json") for line in path.read_text().splitlines()),
        key=lambda record: (record["source_file"], record["reason"]),
    )


def test_rejects_name_the_original_s3_file(sample_s3a, sample_local, sample_input):
    """Same rejects as a local run, each naming its object in the input bucket."""
    local_prefix = sample_input.as_uri().replace("file:///", "file:/")
    expected = [
        {**record, "source_file": record["source_file"].replace(local_prefix, sample_s3a["input_uri"])}
        for record in rejects_of(sample_local)
    ]
    assert sorted(record["reason"] for record in expected) == ["malformed_json", "missing_field:title"], expected
    assert rejects_of(sample_s3a["downloaded"]) == expected


def test_s3_scheme_with_session_token(tmp_path, s3_server, s3a_jars, sample_input, sample_local, spark):
    """s3:// off EMR is served by S3A; a session token selects temporary credentials."""
    result, _, _, downloaded, tmpdir = s3_run(
        tmp_path, s3_server, sample_input, s3a_jars, scheme="s3", token=SESSION_TOKEN
    )
    assert_same_tables(spark, sample_local, downloaded)
    for secret in (SECRET_KEY, SESSION_TOKEN):
        assert secret not in result.output
        assert files_containing(tmpdir, secret) == []
        assert files_containing(downloaded, secret) == []


# --------------------------------------------------------------------------- failures


def existing_output(root: Path) -> dict[str, str]:
    """An output folder from an earlier run, to prove a failed run leaves it alone."""
    for table in TABLES:
        (root / table).mkdir(parents=True)
        (root / table / "part-00000.parquet").write_bytes(f"old {table}".encode())
        (root / table / "_SUCCESS").write_bytes(b"")
    return tree_digest(root)


def assert_clean_storage_failure(result, seconds: float, *names: str) -> None:
    assert result.code == 2, result.output
    assert seconds < FAILURE_SECONDS, f"took {seconds:.0f} s"
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    print(f"{seconds:.1f} s, exit {result.code}: {errors[0]}")  # shown by pytest -rA
    assert any(name in errors[0] for name in names), errors[0]
    assert "Traceback" not in result.output
    assert "\tat " not in result.output
    assert SECRET_KEY not in result.output


def failing_run(tmp_path: Path, input_uri: str, endpoint: str, jars) -> tuple:
    output = tmp_path / "old-output"
    before = existing_output(output)
    cfg = s3_config(tmp_path / "dl.cfg", input_uri, str(output), endpoint, jars)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    began = time.monotonic()
    result = run_job("--config", str(cfg), env={"TMPDIR": str(tmpdir)}, timeout=FAILURE_SECONDS * 3)
    seconds = time.monotonic() - began
    assert tree_digest(output) == before, "the old output was touched"
    assert files_containing(tmpdir, SECRET_KEY) == []
    return result, seconds


@pytest.fixture(scope="module")
def s3_server_with_auth():
    """A second moto server that checks credentials (moto's INITIAL_NO_AUTH_ACTION_COUNT=0):
    it knows no access key at all, so every request is refused."""
    previous = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    try:
        with start_s3_server() as server:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT")
            yield server
    finally:
        if previous is None:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = previous


def test_wrong_credentials(tmp_path, s3_server_with_auth, s3a_jars):
    bucket = new_bucket("locked")
    result, seconds = failing_run(tmp_path, f"s3a://{bucket}/data", s3_server_with_auth.endpoint, s3a_jars)
    assert_clean_storage_failure(result, seconds, bucket)
    assert "[AWS]" in result.stderr


def test_missing_input_bucket(tmp_path, s3_server, s3a_jars):
    bucket = new_bucket("missing")
    result, seconds = failing_run(tmp_path, f"s3a://{bucket}/data", s3_server.endpoint, s3a_jars)
    assert_clean_storage_failure(result, seconds, bucket)


def test_missing_output_bucket(tmp_path, s3_server, s3a_jars):
    in_bucket, out_bucket = new_bucket("in"), new_bucket("missing")
    s3_server.upload_tree(SAMPLE_DATA, in_bucket, "data")
    cfg = s3_config(
        tmp_path / "dl.cfg", f"s3a://{in_bucket}/data", f"s3a://{out_bucket}/lake", s3_server.endpoint, s3a_jars
    )
    before = list_objects(s3_server, in_bucket)
    began = time.monotonic()
    result = run_job("--config", str(cfg), timeout=FAILURE_SECONDS * 3)
    assert_clean_storage_failure(result, time.monotonic() - began, out_bucket)
    assert list_objects(s3_server, in_bucket) == before


def test_unreachable_endpoint(tmp_path, s3a_jars):
    endpoint, bucket = f"http://127.0.0.1:{free_port()}", new_bucket("in")  # nobody listens there
    result, seconds = failing_run(tmp_path, f"s3a://{bucket}/data", endpoint, s3a_jars)
    assert_clean_storage_failure(result, seconds, bucket, endpoint)
