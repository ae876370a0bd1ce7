"""Smoke tests of the test infrastructure itself (tests/infra.py), so that a broken S3
server, proxy, connector or cluster shows up as such and not as an ETL failure.

The fixtures (s3_server, spark_cluster, s3a_jars) come from conftest.py's
``from infra import *``; without it, run ``pytest -p infra tests/test_infra.py``.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from infra import (
    CountingProxy,
    MasterURL,
    S3Server,
    counting_proxy,
    s3a_spark_conf,
    spark_submit,
)

FAST_S = 60
SPARK_S = 300
N_TREE_FILES = 25
PARTITIONED_ROWS = 60
N_PARTITIONS_WRITTEN = 3
CLUSTER_SUM = sum(x * x for x in range(1000))

S3A_ROUND_TRIP = textwrap.dedent(
    """
    import sys
    from pyspark.sql import SparkSession

    target = sys.argv[1]
    spark = SparkSession.builder.appName("infra-s3a").getOrCreate()
    rows = [(i, f"name-{i}", i % 3) for i in range(60)]
    df = spark.createDataFrame(rows, "id INT, name STRING, part INT")
    df.write.mode("overwrite").partitionBy("part").parquet(target)
    back = spark.read.parquet(target)
    print("ROWS", back.count(), "PARTS", back.select("part").distinct().count())
    print("FILES", len(back.inputFiles()))
    spark.stop()
    """
)

CLUSTER_JOB = textwrap.dedent(
    """
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("infra-cluster").getOrCreate()
    sc = spark.sparkContext
    print("MASTER", sc.master)
    print("SUM", sc.parallelize(range(1000), 4).map(lambda x: x * x).sum())
    spark.stop()
    """
)


def _bucket() -> str:
    """A fresh bucket name per test: the S3 server is shared by the session."""
    return f"infra-{uuid.uuid4().hex[:12]}"


@pytest.mark.timeout(FAST_S)
def test_s3_server_round_trip(s3_server: S3Server) -> None:
    client = s3_server.client()
    bucket = _bucket()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


@pytest.mark.timeout(FAST_S)
def test_upload_tree_uploads_every_file(s3_server: S3Server, tmp_path: Path) -> None:
    for i in range(N_TREE_FILES):
        path = tmp_path / f"d{i % 4}" / f"f {i}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f'{{"i": {i}}}')
    bucket = _bucket()
    assert s3_server.upload_tree(tmp_path, bucket, "in/") == N_TREE_FILES
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
    assert len(keys) == N_TREE_FILES
    assert "in/d1/f 5.json" in keys


@pytest.mark.timeout(FAST_S)
def test_counting_proxy_counts_by_kind(s3_server: S3Server) -> None:
    bucket = _bucket()
    with counting_proxy(s3_server.endpoint) as proxy:
        assert isinstance(proxy, CountingProxy)
        client = s3_server.client(endpoint_url=proxy.endpoint)
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="k1", Body=b"x" * 10)
        client.copy_object(Bucket=bucket, Key="k2", CopySource={"Bucket": bucket, "Key": "k1"})
        assert client.head_object(Bucket=bucket, Key="k2")["ContentLength"] == 10
        assert client.get_object(Bucket=bucket, Key="k2")["Body"].read() == b"x" * 10
        client.list_objects_v2(Bucket=bucket, Prefix="k")
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k1"}, {"Key": "k2"}]})
        counts = proxy.snapshot()
    assert counts == {
        "PUT_BUCKET": 1,
        "PUT": 1,
        "COPY": 1,
        "HEAD": 1,
        "GET": 1,
        "LIST": 1,
        "MULTI_DELETE": 1,
    }


@pytest.mark.timeout(SPARK_S)
def test_spark_s3a_partitioned_round_trip(s3_server: S3Server, s3a_jars: list[Path], tmp_path: Path) -> None:
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    script = tmp_path / "s3a_round_trip.py"
    script.write_text(S3A_ROUND_TRIP)
    proc = spark_submit(
        script,
        f"s3a://{bucket}/out/table",
        master="local[2]",
        conf=s3a_spark_conf(s3_server.endpoint, s3a_jars),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"ROWS {PARTITIONED_ROWS} PARTS {N_PARTITIONS_WRITTEN}" in proc.stdout
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="out/table/")["Contents"]]
    assert any(k.startswith("out/table/part=2/") and k.endswith(".parquet") for k in keys)
    assert "out/table/_SUCCESS" in keys


@pytest.mark.timeout(SPARK_S)
def test_spark_submit_runs_on_standalone_cluster(spark_cluster: MasterURL, tmp_path: Path) -> None:
    assert spark_cluster.startswith("spark://127.0.0.1:")
    script = tmp_path / "cluster_job.py"
    script.write_text(CLUSTER_JOB)
    proc = spark_submit(script, master=spark_cluster)
    assert proc.returncode == 0, f"{proc.stderr[-4000:]}\n{spark_cluster.logs()}"
    assert f"MASTER {spark_cluster}" in proc.stdout
    assert f"SUM {CLUSTER_SUM}" in proc.stdout
