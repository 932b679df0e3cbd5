"""`python -m analytics_flink run|submit|job`: the analytics job on a local mini-cluster or a Flink cluster.

* ``run``: local mini-cluster in this process (the local stack's component). Restores from the newest
  retained checkpoint under the checkpoint folder, so a killed job continues where it stopped.
* ``submit --jobmanager HOST:PORT``: the same job, submitted detached to a Flink cluster through the
  ``flink`` CLI shipped in the apache-flink wheel (the cluster needs flink-python in its lib folder
  and this Kafka connector is shipped as a job jar).
* ``job``: the entry point ``flink run`` calls on the client; it builds the graph in whatever
  environment the CLI provides, from flags only (``submit`` passes them), except that Kafka
  credentials may come from ``HC_KAFKA_SECURITY_PROTOCOL`` and ``HC_KAFKA_SASL_*`` in its environment
  (the Helm chart passes them from a Secret, never on the command line). Imports nothing from the
  rest of the repo.

Configuration (run, submit): Kafka, topics and the ``HC_ANALYTICS_*`` variables through the settings
object (healthcare.settings); a flag wins over its setting:

| setting (env) | flag | default |
| --- | --- | --- |
| HC_ANALYTICS_GROUP_ID | --group-id | healthcare-analytics-group |
| HC_ANALYTICS_CHECKPOINT_DIR | --checkpoint-dir | <state>/data/flink-checkpoints |
| HC_ANALYTICS_REST_PORT | --rest-port | the profile's flink_rest port (dev 8081; 127.0.0.1; run only) |
| HC_ANALYTICS_CONNECTOR_DIR | --connector-dir | <HC_TOOLS_DIR>/flink-connectors |
| HC_ANALYTICS_CHECKPOINT_INTERVAL_MS | --checkpoint-interval-ms | 5000 |
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the settings are read only by `run` and `submit`: `job` runs without the repo
    from healthcare.settings import Settings

PACKAGE_DIR = Path(__file__).resolve().parent


def _common(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The flags `run` and `submit` share, defaulting to the settings."""
    state = settings.state_dir.resolve()
    checkpoints = settings.analytics_checkpoint_dir or state / "data" / "flink-checkpoints"
    connectors = settings.analytics_connector_dir or settings.tools_dir.resolve() / "flink-connectors"
    parser.add_argument("--group-id", default=settings.analytics_group_id)
    parser.add_argument(
        "--checkpoint-interval-ms", type=int, default=settings.analytics_checkpoint_interval_ms
    )
    parser.add_argument("--checkpoint-dir", default=str(checkpoints))
    parser.add_argument("--connector-dir", default=str(connectors))


def _kafka_properties(settings: Any) -> dict[str, str]:
    props = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        props["sasl.mechanism"] = settings.kafka_sasl_mechanism
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        module = (
            "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"
            if settings.kafka_sasl_mechanism == "PLAIN"
            else "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        props["sasl.jaas.config"] = (
            f'{module} required username="{settings.kafka_sasl_username}" password="{password}";'
        )
    return props


def _kafka_settings_from_env() -> Any:
    """On a Flink cluster the job has no Settings object: the same HC_KAFKA_* variables, read here
    (the Helm chart puts the SASL credentials into the pods' environment from a Secret, never into
    the FlinkDeployment's arguments)."""
    password = os.environ.get("HC_KAFKA_SASL_PASSWORD")
    return SimpleNamespace(
        kafka_security_protocol=os.environ.get("HC_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT",
        kafka_sasl_mechanism=os.environ.get("HC_KAFKA_SASL_MECHANISM") or None,
        kafka_sasl_username=os.environ.get("HC_KAFKA_SASL_USERNAME"),
        kafka_sasl_password=SimpleNamespace(get_secret_value=lambda: password) if password else None,
    )


def job_kafka_properties(flag_json: str) -> dict[str, str]:
    """The job's Kafka client properties: from HC_KAFKA_* in the environment, then the flag's JSON."""
    props: dict[str, str] = _kafka_properties(_kafka_settings_from_env())
    props.update(json.loads(flag_json))
    return props


def _connector_jars(folder: str) -> list[str]:
    jars = sorted(Path(folder).glob("*.jar")) if folder else []
    if not jars:
        sys.exit(f"analytics-flink: no connector jar in {folder!r} (run `make setup`)")
    return [f"file://{j}" for j in jars]


def cmd_run(argv: list[str]) -> None:
    """Local mini-cluster: the local stack's `flink` component."""
    from healthcare.settings import get_settings

    settings = get_settings()
    state_dir = settings.state_dir.resolve()
    parser = argparse.ArgumentParser(prog="python -m analytics_flink run")
    _common(parser, settings)
    parser.add_argument("--rest-port", type=int, default=settings.analytics_rest_port)
    parser.add_argument("--no-restore", action="store_true", help="start with empty state")
    args = parser.parse_args(argv)

    # Thread mode ("python.execution-mode" below): the JVM runs the Python functions in an embedded
    # interpreter (pemja) instead of a Python worker reached over Beam's gRPC servers, which listen
    # on every interface with no setting to change it. With no Python worker there is no use for
    # pyflink's loopback worker pool either (it too listens on all interfaces): "process" skips it.
    # The embedded interpreter needs this environment's packages on its path.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    import site

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*site.getsitepackages(), str(PACKAGE_DIR.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # The mini-cluster lives in the py4j gateway JVM that pyflink starts on first use: size it here.
    os.environ.setdefault("JVM_ARGS", "-Xms64m -Xmx384m -XX:+UseSerialGC -XX:MaxMetaspaceSize=192m")
    log_dir = state_dir / "logs" / "flink"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))

    from pyflink.datastream import StreamExecutionEnvironment

    from analytics_flink import job

    ckpt_root = Path(args.checkpoint_dir).resolve()
    ckpt_root.mkdir(parents=True, exist_ok=True)
    restore = None if args.no_restore else job.latest_checkpoint(ckpt_root)
    job.prune_checkpoints(ckpt_root, restore)
    conf = job.flink_configuration(
        checkpoint_dir=ckpt_root,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        python_executable=sys.executable,
        restore_from=str(restore) if restore else None,
        extra={
            "rest.bind-address": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.port": str(args.rest_port),
            "jobmanager.bind-host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": "1",
            "python.execution-mode": "thread",
            "taskmanager.memory.managed.size": "128m",
            "taskmanager.memory.network.min": "32m",
            "taskmanager.memory.network.max": "32m",
            "io.tmp.dirs": str(state_dir / "run" / "flink-tmp"),
        },
    )
    (state_dir / "run" / "flink-tmp").mkdir(parents=True, exist_ok=True)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    env.set_python_executable(sys.executable)
    env.add_jars(*_connector_jars(args.connector_dir))
    cfg = job.JobConfig(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        source_topic=settings.topic_appointment_events,
        sink_topic=settings.topic_analytics_results,
        group_id=args.group_id,
        kafka_properties=_kafka_properties(settings),
        checkpoint_interval_ms=args.checkpoint_interval_ms,
    )
    print(
        json.dumps(
            {
                "event": "analytics job starting",
                "restore_from": str(restore) if restore else None,
                "group_id": cfg.group_id,
                "source": cfg.source_topic,
                "sink": cfg.sink_topic,
                "rest": f"http://127.0.0.1:{args.rest_port}",
            }
        ),
        flush=True,
    )
    job.run(env, cfg, job_name="appointment-analytics")


def job_parser() -> argparse.ArgumentParser:
    """The `job` command's flags: everything comes from `submit` (or a FlinkDeployment's arguments);
    only Kafka credentials may come from the environment instead (see job_kafka_properties)."""
    parser = argparse.ArgumentParser(prog="python -m analytics_flink job")
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--checkpoint-interval-ms", type=int, required=True)
    parser.add_argument("--checkpoint-dir", default="")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source-topic", default="appointment-events")
    parser.add_argument("--sink-topic", default="analytics-results")
    parser.add_argument(
        "--kafka-properties", default="{}", help="JSON object of extra Kafka client properties"
    )
    return parser


def cmd_job(argv: list[str]) -> None:
    """What `flink run -pym analytics_flink` executes on the client: build the graph and submit it."""
    args = job_parser().parse_args(argv)

    from pyflink.datastream import StreamExecutionEnvironment

    from analytics_flink import job

    extra: dict[str, str] = {}
    if args.checkpoint_dir:
        extra["execution.checkpointing.dir"] = args.checkpoint_dir
    conf = job.flink_configuration(
        checkpoint_dir=args.checkpoint_dir or "file:///tmp/flink-checkpoints",
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        python_executable=None,  # the cluster's python (flink run -pyexec)
        extra=extra,
    )
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    cfg = job.JobConfig(
        bootstrap_servers=args.bootstrap_servers,
        source_topic=args.source_topic,
        sink_topic=args.sink_topic,
        group_id=args.group_id,
        kafka_properties=job_kafka_properties(args.kafka_properties),
        checkpoint_interval_ms=args.checkpoint_interval_ms,
    )
    job.run(env, cfg, job_name="appointment-analytics", detached=True)


def submit_argv(argv: list[str]) -> list[str]:
    """The `flink run` command line that submits this job to a cluster."""
    from healthcare.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m analytics_flink submit")
    _common(parser, settings)
    parser.add_argument("--jobmanager", required=True, help="HOST:PORT of the cluster's REST endpoint")
    parser.add_argument("--python", default="python3", help="python executable on the cluster's TaskManagers")
    parser.add_argument(
        "--from-savepoint", default=None, help="savepoint or retained checkpoint to start from"
    )
    args = parser.parse_args(argv)

    import pyflink

    flink_cli = Path(pyflink.__file__).resolve().parent / "bin" / "flink"
    jars = [j.removeprefix("file://") for j in _connector_jars(args.connector_dir)]
    cmd = [str(flink_cli), "run", "--detached", "--jobmanager", args.jobmanager]
    if args.from_savepoint:
        cmd += ["--fromSavepoint", args.from_savepoint]
    for jar in jars:
        cmd += ["--jarfile", jar]
    cmd += [
        "--pyModule",
        "analytics_flink",
        "--pyFiles",
        str(PACKAGE_DIR),
        "--pyExecutable",
        args.python,
        "--pyClientExecutable",
        sys.executable,
        "job",
        "--bootstrap-servers",
        settings.kafka_bootstrap_servers,
        "--source-topic",
        settings.topic_appointment_events,
        "--sink-topic",
        settings.topic_analytics_results,
        "--group-id",
        args.group_id,
        "--checkpoint-interval-ms",
        str(args.checkpoint_interval_ms),
        "--kafka-properties",
        json.dumps(_kafka_properties(settings)),
    ]
    if args.checkpoint_dir and "://" in args.checkpoint_dir:
        cmd += ["--checkpoint-dir", args.checkpoint_dir]
    return cmd


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "submit", "job"):
        sys.exit("usage: python -m analytics_flink run|submit|job [options]  (--help after the command)")
    command, rest = argv[0], argv[1:]
    if command == "run":
        cmd_run(rest)
    elif command == "job":
        cmd_job(rest)
    else:
        cmd = submit_argv(rest)
        os.execv(cmd[0], cmd)  # noqa: S606 - hand over to the flink CLI


if __name__ == "__main__":
    main()
