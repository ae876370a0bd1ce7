"""The output lock is taken atomically: two runs that both find it free (or both find the
same stale lock) cannot both go on. S3 decides with a conditional PUT (If-None-Match: *,
If-Match: <stale ETag>), a local folder with O_CREAT | O_EXCL.

Two runs are made to interleave at etl.lock_barrier, the point where a run has found the
lock free (or stale) and has not yet taken it: both reach it, the first goes on and takes
the lock, and only then is the second let through. In-process tests call etl.output_lock
from two threads against the local S3 server; one end-to-end test races two `python etl.py`
processes through SPARKIFY_ETL_LOCK_BARRIER.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from infra import S3_DUMMY_KEY, S3Server
from jobrun import REPO, run_job, write_config

import etl

RACE_TIMEOUT_S = 60
STALE = etl.DEFAULT_STALE_LOCK_MINUTES


def s3_settings(server: S3Server, output_uri: str) -> etl.Settings:
    return etl.Settings(
        config_path="",
        input_uri="",
        output_uri=output_uri,
        report_path=None,
        max_reject_rate=0.05,
        aws={"AWS_ACCESS_KEY_ID": S3_DUMMY_KEY, "AWS_SECRET_ACCESS_KEY": S3_DUMMY_KEY, "AWS_SESSION_TOKEN": ""},
        s3_endpoint=server.endpoint,
        s3_path_style=True,
    )


@pytest.fixture
def s3_output(s3_server: S3Server):
    """(output URI, Settings, boto3 client, bucket, lock key) in a fresh bucket."""
    bucket = f"lock-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    uri = f"s3a://{bucket}/lake"
    return uri, s3_settings(s3_server, uri), s3_server.client(), bucket, f"lake/{etl.LOCK_NAME}"


class Interleaving:
    """Replaces etl.lock_barrier: both threads must arrive; the first goes on, the second
    waits until the first holds the lock (or failed) and is then let through."""

    def __init__(self) -> None:
        self.arrived = threading.Barrier(2, timeout=RACE_TIMEOUT_S)
        self.tickets = itertools.count()
        self.first_done = threading.Event()
        self.second_done = threading.Event()

    def barrier(self) -> None:
        self.arrived.wait()
        if next(self.tickets) > 0:
            assert self.first_done.wait(RACE_TIMEOUT_S), "the first run never took the lock"


def race(monkeypatch, take) -> list[str]:
    """Two threads each run take(run_id) (which enters the lock) at once; their outcomes."""
    order = Interleaving()
    monkeypatch.setattr(etl, "lock_barrier", order.barrier)
    outcomes: dict[str, str] = {}

    def contender(run_id: str) -> None:
        try:
            with take(run_id):
                outcomes[run_id] = "held the lock"
                order.first_done.set()
                order.second_done.wait(RACE_TIMEOUT_S)  # hold it while the other one tries
        except etl.UserError as exc:
            outcomes[run_id] = f"stopped: {exc}"
        except Exception as exc:
            outcomes[run_id] = f"crashed: {type(exc).__name__}: {exc}"
        finally:
            if order.first_done.is_set():
                order.second_done.set()
            order.first_done.set()

    threads = [threading.Thread(target=contender, args=(f"run-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RACE_TIMEOUT_S * 2)
    return sorted(outcomes.values())


def assert_exactly_one(outcomes: list[str], stop_phrase: str) -> None:
    held = [o for o in outcomes if o == "held the lock"]
    stopped = [o for o in outcomes if o.startswith("stopped:")]
    assert len(held) == 1 and len(stopped) == 1, f"exactly one run must hold the lock, got {outcomes}"
    assert stop_phrase in stopped[0], stopped[0]


def old_holder(minutes_ago: float) -> str:
    started = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    holder = {"run_id": "20181105T000000Z-dead", "host": "elsewhere", "pid": 1, "started_at": started.isoformat()}
    return json.dumps(holder)


# --- S3: conditional writes ------------------------------------------------------------------


def test_two_runs_racing_for_an_s3_lock_exactly_one_proceeds(monkeypatch, s3_output):
    uri, settings, client, bucket, key = s3_output
    outcomes = race(monkeypatch, lambda run_id: etl.output_lock(None, uri, run_id, STALE, settings))
    assert_exactly_one(outcomes, "took the lock")
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=key), "the holder must release the lock"


def test_two_runs_taking_over_one_stale_s3_lock_exactly_one_proceeds(monkeypatch, s3_output, caplog):
    uri, settings, client, bucket, key = s3_output
    client.put_object(Bucket=bucket, Key=key, Body=old_holder(STALE + 1).encode())
    outcomes = race(monkeypatch, lambda run_id: etl.output_lock(None, uri, run_id, STALE, settings))
    assert_exactly_one(outcomes, "took over the stale lock")
    assert "taking over the stale lock of run 20181105T000000Z-dead" in caplog.text


def test_a_fresh_s3_lock_stops_the_run(s3_output):
    uri, settings, client, bucket, key = s3_output
    client.put_object(Bucket=bucket, Key=key, Body=old_holder(5).encode())
    with pytest.raises(etl.UserError, match="is writing to"), etl.output_lock(None, uri, "run-1", STALE, settings):
        pass
    assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["host"] == "elsewhere"


def test_only_the_holder_releases_an_s3_lock(s3_output, caplog):
    """A lock replaced while held (taken over as stale) is not deleted by the old holder."""
    uri, settings, client, bucket, key = s3_output
    with etl.output_lock(None, uri, "run-1", STALE, settings):
        assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"] == "run-1"
        client.put_object(Bucket=bucket, Key=key, Body=b'{"run_id": "run-2"}')
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"run_id": "run-2"}'
    assert "no longer this run's" in caplog.text


def test_s3_conditional_writes_are_honoured(s3_output):
    """What the lock relies on, checked against the local server (moto) directly."""
    _, _, client, bucket, key = s3_output
    first = client.put_object(Bucket=bucket, Key=key, Body=b"a", IfNoneMatch="*")
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key=key, Body=b"b", IfNoneMatch="*")
    second = client.put_object(Bucket=bucket, Key=key, Body=b"c", IfMatch=first["ETag"])
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key=key, Body=b"d", IfMatch=first["ETag"])
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.delete_object(Bucket=bucket, Key=key, IfMatch=first["ETag"])
    client.delete_object(Bucket=bucket, Key=key, IfMatch=second["ETag"])


# --- Local folder: O_CREAT | O_EXCL ------------------------------------------------------------


def test_two_runs_racing_for_a_local_lock_exactly_one_proceeds(monkeypatch, tmp_path):
    output = str(tmp_path / "out")
    outcomes = race(monkeypatch, lambda run_id: etl.output_lock(None, output, run_id, STALE))
    assert_exactly_one(outcomes, "took the lock")
    assert not (tmp_path / "out" / etl.LOCK_NAME).exists()


def test_two_runs_taking_over_one_stale_local_lock_exactly_one_proceeds(monkeypatch, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / etl.LOCK_NAME).write_text(old_holder(STALE + 1))
    outcomes = race(monkeypatch, lambda run_id: etl.output_lock(None, str(output), run_id, STALE))
    assert_exactly_one(outcomes, "took over the stale lock")
    assert sorted(path.name for path in output.iterdir()) == [], "no lock and no takeover marker left"


def test_a_local_lock_is_created_exclusively(tmp_path, monkeypatch):
    """The OS refuses the second create even when the first run's file appeared after the check."""
    output = tmp_path / "out"

    def sneak_in() -> None:  # another run creates the lock between our check and our create
        output.mkdir(exist_ok=True)
        (output / etl.LOCK_NAME).write_text(old_holder(1))

    monkeypatch.setattr(etl, "lock_barrier", sneak_in)
    with pytest.raises(etl.UserError, match="took the lock"), etl.output_lock(None, str(output), "run-1", STALE):
        pass
    assert json.loads((output / etl.LOCK_NAME).read_text())["run_id"] == "20181105T000000Z-dead"


# --- End to end: two job processes -------------------------------------------------------------


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_job_runs_racing_for_the_s3_lock(tmp_path, s3_server: S3Server, s3a_jars):
    """Two `python etl.py` runs both find the lock free; the first takes it, then the second
    tries: exactly one run proceeds, the other exits 2 and says why."""
    bucket = f"lock-e2e-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    client = s3_server.client()
    config = write_config(
        tmp_path / "dl.cfg",
        str(REPO / "sample_data"),
        f"s3a://{bucket}/lake",
        spark={"spark.jars": ",".join(str(jar) for jar in s3a_jars)},
        extra=f"[S3]\nENDPOINT = {s3_server.endpoint}\nPATH_STYLE_ACCESS = true\n",
    )
    config.write_text(
        config.read_text()
        .replace("AWS_ACCESS_KEY_ID =", f"AWS_ACCESS_KEY_ID = {S3_DUMMY_KEY}", 1)
        .replace("AWS_SECRET_ACCESS_KEY =", f"AWS_SECRET_ACCESS_KEY = {S3_DUMMY_KEY}", 1)
    )
    barrier = tmp_path / "barrier"
    env = {etl.LOCK_BARRIER_VARIABLE: str(barrier)}
    results: dict[int, object] = {}

    def job(n: int) -> None:
        results[n] = run_job("--config", str(config), env=env)

    threads = [threading.Thread(target=job, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    waiting = lambda: sorted(tmp_path.glob("barrier.*.waiting"))  # noqa: E731
    wait_for(lambda: len(waiting()) == 2, "both runs at the lock")
    first, second = (Path(str(path).removesuffix(".waiting")) for path in waiting())
    Path(f"{first}.go").touch()
    wait_for(lambda: "Contents" in client.list_objects_v2(Bucket=bucket, Prefix=f"lake/{etl.LOCK_NAME}"), "the lock")
    time.sleep(2)  # the first run has written (and, today's lock, read back) its lock
    Path(f"{second}.go").touch()
    for thread in threads:
        thread.join()
    codes = sorted(result.code for result in results.values())
    assert codes == [0, 2], "exactly one run must proceed and the other exit 2; " + " | ".join(
        f"exit {r.code}: {r.stderr.strip()[-300:]}" for r in results.values()
    )
    stopped = next(result for result in results.values() if result.code == 2)
    assert "took the lock" in stopped.stderr and etl.LOCK_NAME in stopped.stderr, stopped.stderr
    assert os.path.exists(f"{first}.go")
