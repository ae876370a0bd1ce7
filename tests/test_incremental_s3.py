"""Daily runs over s3a:// against the local S3 server: each run reads only the new object,
appends to the published tables in the bucket, and the end equals one full run.
"""

from __future__ import annotations

import json
import shutil

import pytest
from infra import S3Server
from jobrun import run_job
from test_incremental import assert_same_tables, day_files, make_month
from test_s3 import download, list_objects, local_run, new_bucket, s3_config

pytestmark = pytest.mark.timeout(1200)

DAYS = 2


def test_daily_s3a_runs_equal_one_full_run(tmp_path, s3_server: S3Server, s3a_jars, spark):
    source = make_month(tmp_path / "source", days=DAYS, songs=30, seed=21)
    in_bucket, out_bucket = new_bucket("in"), new_bucket("out")
    s3_server.upload_tree(source / "song_data", in_bucket, "data/song_data")
    s3_server.create_bucket(out_bucket)
    config = s3_config(
        tmp_path / "dl.cfg", f"s3a://{in_bucket}/data", f"s3a://{out_bucket}/lake", s3_server.endpoint, s3a_jars
    )
    client = s3_server.client()
    reports = []
    for number, path in enumerate(day_files(source)):
        key = f"data/{path.relative_to(source).as_posix()}"
        client.upload_file(str(path), in_bucket, key)
        before = list_objects(s3_server, out_bucket, "lake/songplays/")
        report_file = tmp_path / f"report-{number}.json"
        result = run_job("--config", str(config), "--incremental", report=report_file)
        assert result.code == 0, result.output
        reports.append(result.report)
        after = list_objects(s3_server, out_bucket, "lake/songplays/")
        assert {name: after[name] for name in before} == before, "a published object changed"
        assert result.report["files"]["events"]["read"] == 1
        assert result.report["files"]["events"]["listed"] == number + 1
    assert [report["mode"] for report in reports] == ["full"] + ["incremental"] * (DAYS - 1)

    unchanged = list_objects(s3_server, out_bucket, "lake/")
    quiet = run_job("--config", str(config), "--incremental", report=tmp_path / "quiet.json")
    assert quiet.code == 0 and quiet.report["nothing_new"], quiet.output
    assert {key: etag for key, etag in list_objects(s3_server, out_bucket, "lake/").items() if "_lock" not in key} == {
        key: etag for key, etag in unchanged.items() if "_lock" not in key
    }

    state = list_objects(s3_server, out_bucket, "lake/_state/runs/")
    assert len([key for key in state if key.endswith(".files.jsonl")]) == DAYS
    manifests = sorted(key for key in state if key.endswith(".json"))
    assert [key.rsplit("/", 1)[-1][: -len(".json")] for key in manifests] == [report["run_id"] for report in reports]
    manifest = json.loads(client.get_object(Bucket=out_bucket, Key=manifests[-1])["Body"].read())
    assert manifest["mode"] == "incremental" and manifest["files_processed"] == {"songs": 0, "events": 1}

    reference_input = tmp_path / "all"
    shutil.copytree(source, reference_input)
    local_run(spark, reference_input, tmp_path / "reference")
    downloaded = download(s3_server, out_bucket, "lake", tmp_path / "downloaded")
    assert_same_tables(spark, tmp_path / "reference", downloaded)
    assert reports[0]["files"]["songs"]["read"] == 30
