"""The real components of the local stack: how each is prepared, started and known to be ready."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client as TemporalClient

from devstack.flink import flink, relay
from devstack.install import kafka_libs, postgres_bin_dir, zipkin_jar
from devstack.paths import REPO, VENV_BIN, Paths
from devstack.supervisor import Component, StackError, accepts
from healthcare import clients, probes
from healthcare.contracts import search_attributes
from healthcare.contracts.diagnostics import DiagnosticsInput
from healthcare.profiles import LAMBDA_POOL_MAX
from healthcare.settings import Settings
from workflows import search_attributes as typed_search_attributes
from workflows.diagnostics import DiagnosticsWorkflow

KAFKA_TOPIC_PARTITIONS = 3
EMULATOR_CHECK = 40  # seconds one emulator's health invocation may take
LAMBDA_POOL = min(int(os.environ.get("DEVSTACK_LAMBDA_POOL", "2")), LAMBDA_POOL_MAX)
# SeaweedFS's servers inside `weed mini`, each with its gRPC port (flag prefix -> profile port name).
S3_SERVERS = {
    "s3": "s3",
    "filer": "s3_filer",
    "master": "s3_master",
    "volume": "s3_volume",
    "admin": "s3_admin",
}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root; as root we drop to the `postgres` account Debian creates."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _chown_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres", "postgres")


def _answers_ok(url: str) -> Callable[[], Awaitable[None]]:
    """A readiness check: `url` answers a 2xx within two seconds."""

    async def ready() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            (await http.get(url)).raise_for_status()

    return ready


# -- PostgreSQL -------------------------------------------------------------------------------
def postgres(settings: Settings, paths: Paths) -> Component:
    url = make_url(settings.database_url)
    port = url.port or 5432
    data = paths.data / "postgres"
    sock = paths.run / "postgres"
    pg_bin = postgres_bin_dir()

    async def prepare() -> None:
        if pg_bin is None:
            raise StackError("postgres: server not installed (run `make setup`)")
        sock.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(sock)
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(data)
        data.chmod(0o700)
        proc = await asyncio.create_subprocess_exec(
            *_as_postgres_user(),
            str(pg_bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            last = out.decode(errors="replace").strip().splitlines()[-1:]
            raise StackError(f"postgres: initdb failed: {' '.join(last)}")

    def argv() -> list[str]:
        assert pg_bin is not None
        return [
            *_as_postgres_user(),
            str(pg_bin / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(port),
            "-c",
            f"unix_socket_directories={sock}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "log_min_messages=warning",
        ]

    async def superuser() -> asyncpg.Connection:
        return await asyncpg.connect(host=str(sock), port=port, user="postgres", database="postgres")

    async def ready() -> None:
        conn = await superuser()
        await conn.close()

    async def bootstrap() -> None:
        await _ensure_roles(settings, sock, port)
        proc = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "healthcare"),
            "migrate",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise StackError(f"postgres: migrations failed: {out.decode(errors='replace')[-300:]}")

    return Component(
        name="postgres",
        argv=argv,
        ready=ready,
        prepare=prepare,
        after_ready=bootstrap,
        ports=[port],
        stop_signal=2,  # SIGINT = PostgreSQL's "fast" shutdown
        ready_timeout=60,
        describe=f"127.0.0.1:{port}",
    )


async def _ensure_roles(settings: Settings, sock: Path, port: int) -> None:
    """Two roles, as in production: the owner runs migrations and owns the schema (audit_log and its
    triggers included); the app role (HC_DATABASE_URL) only gets what migration 0006 grants it."""
    url, owner_url = make_url(settings.database_url), make_url(settings.owner_database_url)
    app, owner, db = url.username, owner_url.username, url.database

    async def superuser(database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(host=str(sock), port=port, user="postgres", database=database)

    conn = await superuser()
    try:
        for role, password in ((app, url.password), (owner, owner_url.password)):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname=$1", role):
                await conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", db):
            await conn.execute(f'CREATE DATABASE "{db}" OWNER "{owner}"')
        else:
            await conn.execute(f'ALTER DATABASE "{db}" OWNER TO "{owner}"')
    finally:
        await conn.close()
    if app == owner:
        return
    # A database made before the owner role existed has everything owned by the app role.
    conn = await superuser(db or "postgres")
    try:
        owned = "SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1"
        if await conn.fetchval(owned, app):
            await conn.execute(f'REASSIGN OWNED BY "{app}" TO "{owner}"')
    finally:
        await conn.close()


# -- Temporal ---------------------------------------------------------------------------------
def temporal(settings: Settings, paths: Paths) -> Component:
    port = _port(settings.temporal_address)
    ui_port = _port(settings.temporal_ui_url)
    http_port, metrics_port = settings.stack_port("temporal_http"), settings.stack_port("temporal_metrics")
    db = paths.data / "temporal" / "temporal.db"

    async def prepare() -> None:
        db.parent.mkdir(parents=True, exist_ok=True)

    def argv() -> list[str]:
        args = [
            str(VENV_BIN / "temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-ip",
            "127.0.0.1",
            "--ui-port",
            str(ui_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--db-filename",
            str(db),
            "--sqlite-pragma",
            "journal_mode=wal",
            # With WAL, NORMAL stays consistent after a crash and skips an fsync per commit.
            "--sqlite-pragma",
            "synchronous=normal",
            # One partition per task queue: on a single-node dev server more partitions only add
            # forwarding between them. Eager activities: an activity scheduled by a workflow task
            # goes straight back to the worker that completed it, without a trip through matching.
            "--dynamic-config-value",
            "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value",
            "matching.numTaskqueueWritePartitions=1",
            "--dynamic-config-value",
            "system.enableActivityEagerExecution=true",
            "--namespace",
            settings.temporal_namespace,
            "--log-level",
            "warn",
            "--log-format",
            "json",
            # The UI asks our codec server to decrypt payloads; it answers only signed-in operators.
            "--ui-codec-endpoint",
            codec_endpoint(settings),
        ]
        for attr, kind in search_attributes.TYPES.items():
            args += ["--search-attribute", f"{attr}={kind}"]
        return args

    async def ready() -> None:
        client = await clients.temporal_client(settings)
        await probes.probe_temporal(client, settings.temporal_namespace)

    async def register_search_attributes() -> None:
        # `--search-attribute` registers only when the server creates its database: a stack made
        # before an attribute was added gets it here.
        client = await clients.temporal_client(settings)
        missing = await probes.missing_search_attributes(client, settings.temporal_namespace)
        if missing:
            await typed_search_attributes.register(client, settings.temporal_namespace, missing)

    return Component(
        name="temporal",
        argv=argv,
        ready=ready,
        after_ready=register_search_attributes,
        prepare=prepare,
        ports=[port, ui_port, http_port, metrics_port],
        ready_timeout=90,
        describe=f"{settings.temporal_address}, UI {settings.temporal_ui_url}",
    )


# -- Kafka ------------------------------------------------------------------------------------
def kafka_cluster_id() -> str:
    """A 22-character base64url id, as `kafka-storage random-uuid` makes, never starting with "-":
    the storage tool would read such an id as an option (1 draw in 64; a CI run failed on one)."""
    while (cluster_id := secrets.token_urlsafe(16)[:22]).startswith("-"):
        pass
    return cluster_id


def kafka(settings: Settings, paths: Paths) -> Component:
    port = _port(settings.kafka_bootstrap_servers.split(",")[0])
    controller_port = settings.stack_port("kafka_controller")
    data = paths.data / "kafka"
    config_dir = paths.run / "kafka"
    kafka_conf = REPO / "devstack" / "kafka"
    java = ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
    classpath = ["-cp", f"{kafka_libs(paths)}/*"]

    async def prepare() -> None:
        if shutil.which("java") is None:
            raise StackError("kafka: java not found (run `make setup`)")
        data.mkdir(parents=True, exist_ok=True)
        config_dir.mkdir(parents=True, exist_ok=True)
        template = (kafka_conf / "server.properties").read_text()
        (config_dir / "server.properties").write_text(
            template.format(port=port, controller_port=controller_port, log_dirs=data)
        )
        cluster_id_file = paths.data / "kafka.cluster-id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(kafka_cluster_id())
        proc = await asyncio.create_subprocess_exec(
            *java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={kafka_conf / 'tools-log4j2.properties'}",
            *classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            "-t",
            cluster_id_file.read_text().strip(),
            "-c",
            str(config_dir / "server.properties"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise StackError(f"kafka: storage format failed: {out.decode(errors='replace')[-300:]}")

    def argv() -> list[str]:
        return [
            *java,
            "-Xms128m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={kafka_conf / 'log4j2.properties'}",
            *classpath,
            "kafka.Kafka",
            str(config_dir / "server.properties"),
        ]

    async def ready() -> None:
        admin = clients.kafka_admin(settings)
        await admin.start()
        try:
            await admin.describe_cluster()
        finally:
            await admin.close()

    async def create_topics() -> None:
        from aiokafka.admin import NewTopic

        admin = clients.kafka_admin(settings)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                settings.topic_appointment_events,
                settings.topic_analytics_results,
                settings.appointment_events_dlq,
            ]
            new = [
                NewTopic(t, num_partitions=KAFKA_TOPIC_PARTITIONS, replication_factor=1)
                for t in wanted
                if t not in existing
            ]
            if new:
                await admin.create_topics(new)
        finally:
            await admin.close()

    return Component(
        name="kafka",
        argv=argv,
        ready=ready,
        prepare=prepare,
        after_ready=create_topics,
        ports=[port, controller_port],
        ready_timeout=90,
        stop_timeout=30,
        describe=f"127.0.0.1:{port}",
    )


# -- S3-compatible storage (SeaweedFS) --------------------------------------------------------
def s3(settings: Settings, paths: Paths) -> Component:
    data = paths.data / "seaweedfs"
    conf = paths.run / "seaweedfs-s3.json"
    port = _port(settings.s3_endpoint_url or f"http://127.0.0.1:{settings.stack_port('s3')}")
    # Every listener of `weed mini` named, so profiles never share one (its defaults are fixed ports).
    server_ports = {
        server: port if server == "s3" else settings.stack_port(name) for server, name in S3_SERVERS.items()
    }
    grpc_ports = {server: settings.stack_port(f"{name}_grpc") for server, name in S3_SERVERS.items()}

    async def prepare() -> None:
        data.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "healthcare",
            "credentials": [
                {
                    "accessKey": settings.aws_access_key_id,
                    "secretKey": settings.aws_secret_access_key.get_secret_value(),
                }
            ],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        conf.write_text(json.dumps({"identities": [identity]}))
        conf.chmod(0o600)

    def argv() -> list[str]:
        return [
            *_private_tmp(data / "tmp", needs=(paths.bin, data)),
            str(paths.bin / "weed"),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{server}.port={p}" for server, p in server_ports.items()),
            *(f"-{server}.port.grpc={p}" for server, p in grpc_ports.items()),
            f"-s3.config={conf}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-admin.port.legacy=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
            f"-filer.localSocket={data}/filer.sock",
            f"-s3.localSocket={data}/s3.sock",
        ]

    def env() -> dict[str, str]:
        # SeaweedFS turns AWS_* and S3_BUCKET in its environment into extra identities and buckets.
        return {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_BUCKET")}

    ready = _answers_ok(f"http://127.0.0.1:{port}/healthz")

    async def create_bucket() -> None:
        s3c = clients.s3_client(settings)

        def ensure() -> None:
            try:
                s3c.head_bucket(Bucket=settings.s3_bucket)
            except s3c.exceptions.ClientError:
                s3c.create_bucket(Bucket=settings.s3_bucket)  # private: no ACL, no policy
            # The portal fetches a PDF by following the API's presigned redirect: the browser may read
            # the answer only if the bucket allows the portal's origin (reads still need a signature).
            s3c.put_bucket_cors(Bucket=settings.s3_bucket, CORSConfiguration=portal_cors(settings))

        await asyncio.to_thread(ensure)
        await _storage_writes(settings, data)

    return Component(
        name="s3",
        argv=argv,
        ready=ready,
        prepare=prepare,
        after_ready=create_bucket,
        env=env,
        ports=[*server_ports.values(), *grpc_ports.values()],
        ready_timeout=60,
        stop_timeout=15,
        describe=f"{settings.s3_endpoint_url}, bucket {settings.s3_bucket}",
    )


WRITE_CHECK_KEY = "devstack/write-check"
WRITE_CHECK_SECONDS = 45.0


async def _storage_writes(settings: Settings, data: Path, *, within: float = WRITE_CHECK_SECONDS) -> None:
    """Stores and deletes one object, or fails the start naming the cause. SeaweedFS answers its
    health check and lists buckets while it cannot store a byte: its volume server offers no capacity
    when less than 1 % of the disk is free, and every PDF upload would then hang until it times out."""
    s3c = clients.s3_client(settings, read_timeout=5, max_attempts=1)

    def write() -> None:
        s3c.put_object(Bucket=settings.s3_bucket, Key=WRITE_CHECK_KEY, Body=b"ok")
        s3c.delete_object(Bucket=settings.s3_bucket, Key=WRITE_CHECK_KEY)

    deadline = asyncio.get_running_loop().time() + within
    while True:  # the volume server registers its capacity a moment after the S3 port answers
        try:
            await asyncio.to_thread(write)
            return
        except Exception as exc:  # retried, then reported with its cause
            if asyncio.get_running_loop().time() >= deadline:
                disk = shutil.disk_usage(data)
                raise StackError(
                    f"s3: storage answers but cannot store an object within {within:g}s "
                    f"({type(exc).__name__}: {str(exc)[:160]}); {disk.free / 2**30:.1f} GiB of "
                    f"{disk.total / 2**30:.0f} GiB free on the disk of {data}, and SeaweedFS needs "
                    "more than 1 % free: free some space (old clones, .state/*/data) and start again"
                ) from exc
        await asyncio.sleep(0.5)


def _private_tmp(folder: Path, *, needs: tuple[Path, ...] = ()) -> list[str]:
    """`weed mini` puts its gRPC sockets at fixed /tmp paths named after the port only, so two stacks
    on one machine (other network namespaces, or the test stack) would dial each other's master. As
    root, give it a /tmp of its own: a private mount namespace with `folder` bound onto /tmp.

    Not when a path the process `needs` (its binary, its data) lies under /tmp itself, as in a clone
    made there: the bind would hide it. Such a stack shares /tmp, which only matters when two stacks
    of the same profile run at once in different network namespaces."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    tmp = Path("/tmp").resolve()  # noqa: S108 - the fixed path weed uses, compared, not written to
    if any(p.resolve() == tmp or tmp in p.resolve().parents for p in (folder, *needs)):
        return []
    folder.mkdir(parents=True, exist_ok=True)
    script = 'mount --bind "$0" /tmp && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(folder)]


def portal_cors(settings: Settings) -> dict[str, Any]:
    origins = [
        f"http://{host}:{port}" for host in ("127.0.0.1", "localhost") for port in (settings.api_port, 5173)
    ]
    return {
        "CORSRules": [
            {
                "AllowedOrigins": origins,
                "AllowedMethods": ["GET"],
                "AllowedHeaders": ["*"],
                "MaxAgeSeconds": 3600,
            }
        ]
    }


# -- Lambda: a pool of runtime emulators behind one Invoke API --------------------------------
def lambda_pool(settings: Settings, paths: Paths) -> list[Component]:
    gateway_port = _port(settings.lambda_endpoint_url or f"http://127.0.0.1:{settings.stack_port('lambda')}")
    function_env = {
        "AWS_LAMBDA_FUNCTION_NAME": settings.lambda_function_name,
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "60",
        "AWS_REGION": settings.aws_region,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value(),
        "AWS_ENDPOINT_URL_S3": settings.s3_endpoint_url or "",
        "INVOICE_BUCKET": settings.s3_bucket,
        "PYTHONPATH": "",
    }
    emulators: list[Component] = []
    backends: list[str] = []
    for i in range(1, LAMBDA_POOL + 1):
        api_port = settings.stack_port("lambda_api") + i
        runtime_port = settings.stack_port("lambda_runtime") + i
        backends.append(f"127.0.0.1:{api_port}")

        def argv(api_port: int = api_port, runtime_port: int = runtime_port) -> list[str]:
            return [
                str(paths.bin / "aws-lambda-rie"),
                "--log-level",
                "error",
                "--runtime-interface-emulator-address",
                f"127.0.0.1:{api_port}",
                "--runtime-api-address",
                f"127.0.0.1:{runtime_port}",
                str(VENV_BIN / "python"),
                "-m",
                "awslambdaric",
                "invoice_pdf.handler",
            ]

        async def ready(api_port: int = api_port) -> None:
            await _invoke_health(f"http://127.0.0.1:{api_port}", settings, read_timeout=EMULATOR_CHECK)

        emulators.append(
            Component(
                name=f"lambda-{i}",
                argv=argv,
                ready=ready,
                live=functools.partial(accepts, api_port),
                env=lambda: function_env,
                cwd=REPO / "lambda",
                ports=[api_port, runtime_port],
                ready_timeout=90,
                # An emulator crashes when a second invocation arrives while one runs (see
                # devstack/lambda_gateway.py): a slow first health check (a cold start on a busy
                # machine) is waited for, not cut short and sent again.
                check_timeout=EMULATOR_CHECK + 5,
            )
        )

    async def gateway_ready() -> None:
        await _invoke_health(settings.lambda_endpoint_url or "", settings)

    gateway = Component(
        name="lambda",
        argv=lambda: [
            str(VENV_BIN / "python"),
            "-m",
            "devstack.lambda_gateway",
            f"127.0.0.1:{gateway_port}",
            *backends,
        ],
        ready=gateway_ready,
        depends_on=[c.name for c in emulators],
        ports=[gateway_port],
        ready_timeout=30,
        describe=f"{settings.lambda_endpoint_url} ({LAMBDA_POOL} emulators)",
    )
    return [*emulators, gateway]


_HEALTH_INVOCATIONS: dict[str, asyncio.Future[None]] = {}


async def _invoke_health(endpoint: str, settings: Settings, read_timeout: int = 5) -> None:
    """One health invocation per endpoint at a time: an emulator serves one invocation at a time and
    crashes on a second (RIE panics in rapidcore). A check the supervisor gave up on keeps running,
    and a later check waits on it instead of starting another."""
    running = _HEALTH_INVOCATIONS.get(endpoint)
    if running is None or running.done():
        update = {"lambda_endpoint_url": endpoint}
        lam = clients.lambda_client(settings.model_copy(update=update), read_timeout=read_timeout)
        running = asyncio.ensure_future(
            asyncio.to_thread(probes.check_lambda, lam, settings.lambda_function_name)
        )
        _HEALTH_INVOCATIONS[endpoint] = running
    await asyncio.shield(running)


# -- Zipkin: the trace backend (in-memory) ---------------------------------------------------
# The stacks that trace: a developer's and the tests'. Benchmarks measure the platform without an
# exporter's cost, and chaos runs do not need one.
TRACED_PROFILES = frozenset({"dev", "test"})


def traced(settings: Settings) -> bool:
    return settings.profile in TRACED_PROFILES


def zipkin_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.stack_port('zipkin')}"


def zipkin(settings: Settings, paths: Paths) -> Component:
    """Zipkin's server with in-memory storage: the UI and span collector our processes export to
    (HC_TRACING_ENDPOINT, set for them by `tracing_env`). Spans live until it stops."""
    port = settings.stack_port("zipkin")
    jar = zipkin_jar(paths)

    async def prepare() -> None:
        if shutil.which("java") is None or not jar.exists():
            raise StackError("zipkin: java or its server jar missing (run `make setup`)")

    ready = _answers_ok(f"{zipkin_url(settings)}/health")

    return Component(
        name="zipkin",
        argv=lambda: [
            "java",
            "-Xms32m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-jar",
            str(jar),
            f"--armeria.ports[0].port={port}",
            "--armeria.ports[0].ip=127.0.0.1",
            "--armeria.ports[0].protocols=http",
            "--zipkin.self-tracing.enabled=false",
            "--logging.level.root=WARN",
        ],
        env=lambda: {"STORAGE_TYPE": "mem", "MEM_MAX_SPANS": "200000"},
        ready=ready,
        prepare=prepare,
        ports=[port],
        ready_timeout=90,
        describe=zipkin_url(settings),
    )


def tracing_env(settings: Settings) -> dict[str, str]:
    """Our traced roles export to the stack's Zipkin unless HC_TRACING_ENDPOINT says otherwise."""
    if "HC_TRACING_ENDPOINT" in os.environ or not traced(settings):
        return {}
    return {"HC_TRACING_ENDPOINT": f"{zipkin_url(settings)}/api/v2/spans"}


# -- Our own processes ------------------------------------------------------------------------
# Prometheus metrics of the background roles (the API serves /metrics on its own port): the
# profile's `worker_metrics` and `consumer_metrics` ports (dev: 9464 and 9465).


def worker(settings: Settings, paths: Paths) -> Component:
    metrics_port = settings.stack_port("worker_metrics")

    async def ready() -> None:
        # Ready means a workflow really ran on this worker and its activity reached the database.
        client = await clients.temporal_client(settings)
        probe = uuid.uuid4().hex[:12]
        workflow_id = f"diagnostics-devstack-{probe}"
        try:
            await client.execute_workflow(
                DiagnosticsWorkflow.run,
                DiagnosticsInput(probe=probe),
                id=workflow_id,
                task_queue=settings.temporal_task_queue,
                execution_timeout=timedelta(seconds=4),
            )
        finally:
            # A probe is no work of the developer's: it leaves no run (not even a timed-out one
            # from an attempt before the worker was up) in the Temporal UI.
            with contextlib.suppress(Exception):
                await asyncio.shield(_delete_workflow(client, settings.temporal_namespace, workflow_id))

    return Component(
        name="worker",
        argv=lambda: [str(VENV_BIN / "healthcare"), "serve", "worker"],
        ready=ready,
        depends_on=["postgres", "temporal", "kafka", "s3", "lambda"],
        ports=[metrics_port],
        env=lambda: {"HC_METRICS_PORT": str(metrics_port), **tracing_env(settings)},
        ready_timeout=60,
        describe=f"task queue {settings.temporal_task_queue}, metrics :{metrics_port}",
    )


async def _delete_workflow(client: TemporalClient, namespace: str, workflow_id: str) -> None:
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )


def api(settings: Settings, paths: Paths) -> Component:
    base = f"http://{settings.api_host}:{settings.api_port}"

    ready = _answers_ok(f"{base}/healthz")

    return Component(
        name="api",
        argv=lambda: [str(VENV_BIN / "healthcare"), "serve", "api"],
        ready=ready,
        depends_on=["postgres", "temporal"],
        ports=[settings.api_port],
        env=lambda: tracing_env(settings),
        ready_timeout=60,
        describe=base,
    )


def payments(settings: Settings, paths: Paths) -> Component:
    """The local payment provider (devstack/payment_provider.py): checkouts, its payment page, and
    signed callbacks to the API's webhook."""
    port = _port(settings.payment_provider_url)
    webhook = f"http://{settings.api_host}:{settings.api_port}/api/v1/payments/webhook"

    ready = _answers_ok(f"http://127.0.0.1:{port}/healthz")

    return Component(
        name="payments",
        argv=lambda: [
            str(VENV_BIN / "python"),
            "-m",
            "devstack.payment_provider",
            f"127.0.0.1:{port}",
            "--db",
            str(paths.data / "payments" / "provider.sqlite"),
            "--webhook-url",
            webhook,
        ],
        ready=ready,
        ports=[port],
        ready_timeout=30,
        describe=f"{settings.payment_provider_url} (callbacks to {webhook})",
    )


def consumer(settings: Settings, paths: Paths) -> Component:
    """The billing consumer: Kafka appointment events in, billing workflows started or signalled."""
    metrics_port = settings.stack_port("consumer_metrics")

    async def ready() -> None:
        # Ready once its group has a member: the consumer joined and owns partitions.
        admin = clients.kafka_admin(settings)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups(["billing-group"])
        finally:
            await admin.close()
        (group,) = response.to_object()["groups"]
        if group["state"] != "Stable" or not group["members"]:
            raise RuntimeError(f"billing-group is {group['state']}")

    return Component(
        name="consumer",
        argv=lambda: [str(VENV_BIN / "healthcare"), "serve", "consumer"],
        ready=ready,
        depends_on=["kafka", "temporal", "worker"],
        ports=[metrics_port],
        env=lambda: {"HC_METRICS_PORT": str(metrics_port), **tracing_env(settings)},
        ready_timeout=60,
        describe=f"group billing-group, metrics :{metrics_port}",
    )


def codec_endpoint(settings: Settings) -> str:
    return f"http://{settings.codec_host}:{settings.codec_port}"


def codec_server(settings: Settings, paths: Paths) -> Component:
    """The Temporal UI's codec server: decrypts payloads for signed-in staff and admins."""

    ready = _answers_ok(f"{codec_endpoint(settings)}/readyz")

    return Component(
        name="codec",
        argv=lambda: [str(VENV_BIN / "healthcare"), "serve", "codec"],
        ready=ready,
        depends_on=["postgres"],
        ports=[settings.codec_port],
        ready_timeout=60,
        describe=codec_endpoint(settings),
    )


def all_components(settings: Settings, paths: Paths) -> list[Component]:
    """The stack. A new component is a function returning its Component, one line here, and its
    ports as names in healthcare/profiles.py DEV_PORTS (read back with `settings.stack_port`)."""
    return [
        postgres(settings, paths),
        temporal(settings, paths),
        kafka(settings, paths),
        s3(settings, paths),
        *lambda_pool(settings, paths),
        *([zipkin(settings, paths)] if traced(settings) else []),
        worker(settings, paths),
        api(settings, paths),
        codec_server(settings, paths),
        *([payments(settings, paths)] if settings.payment_provider == "local" else []),
        consumer(settings, paths),
        flink(settings, paths),
        relay(settings, paths),
    ]


def urls(settings: Settings) -> dict[str, str]:
    base = f"http://{settings.api_host}:{settings.api_port}"
    return {
        "API docs": f"{base}/api/v1/docs",
        "Portal": f"{base}/",
        "Readiness": f"{base}/readyz",
        "Metrics": (
            f"{base}/metrics (worker :{settings.stack_port('worker_metrics')}, "
            f"consumer :{settings.stack_port('consumer_metrics')})"
        ),
        "Temporal UI": settings.temporal_ui_url,
        **(
            {"Traces (Zipkin)": f"{zipkin_url(settings)}/zipkin/ (tag correlation_id=<id>)"}
            if traced(settings)
            else {}
        ),
        "Codec server": f"{codec_endpoint(settings)}/login (staff and admins: decoded payloads in the UI)",
        "Analytics WS": f"ws://{settings.ws_host}:{settings.ws_port}/ws/analytics?token=<access token>",
    }
