"""The job against the local S3 server on the real data of ../shared/data: the shared sample
s3a -> s3a gives the tables of a local run; udacity-full s3a -> s3a gives the specified
figures and a file per song folder. A file of its own, so that the longest test of the
suite is not queued behind the rest of test_s3.py on one worker (pytest -n 2 --dist loadfile).
"""

from __future__ import annotations

import pytest
from conftest import shared_dataset
from jobrun import run_job, table_rows
from test_s3 import SECRET_KEY, assert_same_tables, download, list_objects, new_bucket, s3_config, s3_run

pytestmark = pytest.mark.timeout(900)

UDACITY_FULL = {"songplays": 6820, "users": 97, "songs": 14896, "artists": 9553, "time": 6813}
UDACITY_MATCHED = 333


def test_shared_sample_s3a_equals_a_local_run(tmp_path, s3_server, s3a_jars, spark, shared_sample_run):
    data, local, _ = shared_sample_run
    _, _, _, downloaded, _ = s3_run(tmp_path, s3_server, data, s3a_jars)
    assert_same_tables(spark, local, downloaded)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_udacity_full_s3a_in_s3a_out(tmp_path, s3_server, s3a_jars, spark):
    data = shared_dataset("udacity-full")
    in_bucket, out_bucket = new_bucket("full-in"), new_bucket("full-out")
    s3_server.upload_tree(data, in_bucket, "data")
    s3_server.create_bucket(out_bucket)
    cfg = s3_config(
        tmp_path / "dl.cfg", f"s3a://{in_bucket}/data", f"s3a://{out_bucket}/lake", s3_server.endpoint, s3a_jars
    )
    report = tmp_path / "report.json"
    result = run_job("--config", str(cfg), report=report, env={"TMPDIR": str(tmp_path)})
    assert result.code == 0, result.output
    assert result.report["tables"] == UDACITY_FULL
    assert result.report["songplays_matched"] == UDACITY_MATCHED
    assert SECRET_KEY not in result.output
    written = list_objects(s3_server, out_bucket, "lake/")
    song_files = [key for key in written if key.startswith("lake/songs/") and key.endswith(".parquet")]
    assert len(song_files) > 9000  # one per (year, artist_id) folder
    downloaded = tmp_path / "downloaded"
    for table in ("songplays", "users", "artists", "time"):
        download(s3_server, out_bucket, f"lake/{table}", downloaded / table)
    songplays = table_rows(spark, downloaded, "songplays")
    assert len(songplays) == UDACITY_FULL["songplays"]
    for table in ("users", "artists", "time"):
        assert len(table_rows(spark, downloaded, table)) == UDACITY_FULL[table], table
    columns = sorted(spark.read.parquet(str(downloaded / "songplays")).columns)
    song_ids = [row[columns.index("song_id")] for row in songplays]
    assert sum(song_id is not None for song_id in song_ids) == UDACITY_MATCHED
