"""The PyFlink DataStream job: appointment-events (Kafka source) -> one keyed aggregator -> analytics-results.

Imports only pyflink and analytics_flink.metrics, so it runs unchanged on a remote cluster.

Pipeline: KafkaSource (raw bytes) -> key_by(constant) -> Aggregate (MapState of seen event ids with a
7-day TTL + the metric state as JSON in ValueState) -> KafkaSink (at-least-once, one partition).

Delivery: checkpoints are aligned (exactly-once *state*): the source offsets and the aggregator's state
are restored together, so after a crash every event is counted exactly once. The sink is
at-least-once: results produced after the last checkpoint are produced again on recovery. That is
harmless because each result carries the cumulative totals (applying one twice changes nothing; the
browser shows the latest). Kafka transactions would instead hold every result back until the next
checkpoint completes, which puts the checkpoint interval into the freshness budget (goal p99 <= 1 s).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema, SimpleStringSchema
from pyflink.common.time import Time
from pyflink.datastream import (
    KeyedProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor
from pyflink.java_gateway import get_gateway

from analytics_flink import metrics

log = logging.getLogger("analytics_flink")

DEFAULT_GROUP_ID = "healthcare-analytics-group"
SEEN_TTL_DAYS = 7


@dataclass(frozen=True)
class JobConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    source_topic: str = "appointment-events"
    sink_topic: str = "analytics-results"
    group_id: str = DEFAULT_GROUP_ID
    kafka_properties: dict[str, str] = field(default_factory=dict)  # security.protocol, sasl.*
    checkpoint_interval_ms: int = 5_000
    window_hours: int = 24
    allowed_lateness_ms: int = 5 * 60_000
    max_future_skew_ms: int = 3_600_000

    def metrics_config(self) -> metrics.MetricsConfig:
        return metrics.MetricsConfig(
            window_hours=self.window_hours,
            allowed_lateness_ms=self.allowed_lateness_ms,
            max_future_skew_ms=self.max_future_skew_ms,
        )


class _SeenMapState:
    """metrics.SeenIds over Flink MapState (entries expire SEEN_TTL_DAYS after they are written)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def __contains__(self, event_id: object) -> bool:
        return bool(self._state.contains(event_id))

    def __setitem__(self, event_id: str, occurred_at_ms: int) -> None:
        self._state.put(event_id, occurred_at_ms)


class Aggregate(KeyedProcessFunction):  # type: ignore[misc]
    """The single global aggregator: all results describe one metric, so one key, parallelism 1."""

    def __init__(self, config: metrics.MetricsConfig) -> None:
        self._config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        ttl = (
            StateTtlConfig.new_builder(Time.days(SEEN_TTL_DAYS))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            .build()
        )
        seen = MapStateDescriptor("seen-event-ids", Types.STRING(), Types.LONG())
        seen.enable_time_to_live(ttl)
        self._seen = _SeenMapState(runtime_context.get_map_state(seen))
        self._state = runtime_context.get_state(ValueStateDescriptor("analytics", Types.STRING()))
        group = runtime_context.get_metrics_group()
        self._malformed = group.counter("malformedRecords")
        self._duplicates = group.counter("duplicateEvents")
        self._late = group.counter("lateEvents")

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[str]:
        state = metrics.AnalyticsState.from_json(self._state.value())
        before = (state.malformed_events, state.duplicate_events, state.late_events)
        out = metrics.apply(
            state, value, seen=self._seen, now_ms=int(time.time() * 1000), config=self._config
        )
        self._state.update(state.to_json())
        self._malformed.inc(state.malformed_events - before[0])
        self._duplicates.inc(state.duplicate_events - before[1])
        self._late.inc(state.late_events - before[2])
        if state.malformed_events > before[0]:
            log.warning("skipped a malformed appointment event (total %d)", state.malformed_events)
        if out is not None:
            yield json.dumps(out, separators=(",", ":"))


def _constant_key(_: bytes) -> int:
    return 0


def build(env: StreamExecutionEnvironment, cfg: JobConfig) -> None:
    """Add the pipeline to env (the same graph locally and on a cluster)."""
    source_builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(cfg.bootstrap_servers)
        .set_topics(cfg.source_topic)
        .set_group_id(cfg.group_id)
        # Committed group offsets; earliest when the group has none (the very first start).
        # After a restore, the offsets in the checkpoint win over both.
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        # ByteArraySchema skips null values (tombstones) instead of failing; bad bytes reach
        # metrics.apply, which counts them as malformed.
        .set_value_only_deserializer(ByteArraySchema())
        .set_property("commit.offsets.on.checkpoint", "true")
        .set_property("partition.discovery.interval.ms", "60000")
    )
    for key, value in cfg.kafka_properties.items():
        source_builder = source_builder.set_property(key, value)
    source = source_builder.build()

    j_partitioner = (
        get_gateway().jvm.org.apache.flink.streaming.connectors.kafka.partitioner.FlinkFixedPartitioner()
    )
    serializer = (
        KafkaRecordSerializationSchema.builder()
        .set_topic(cfg.sink_topic)
        .set_value_serialization_schema(SimpleStringSchema())
    )
    # One sink subtask -> one partition: results stay in the order the aggregator made them, so
    # "the last message" is the latest result.
    serializer._j_builder.setPartitioner(j_partitioner)
    sink_builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.bootstrap_servers)
        .set_record_serializer(serializer.build())
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", "0")
        .set_property("acks", "all")
    )
    for key, value in cfg.kafka_properties.items():
        sink_builder = sink_builder.set_property(key, value)
    sink = sink_builder.build()

    events = env.from_source(
        source,
        # Event time lives in the aggregator (see metrics.py): results are emitted per event, and a
        # source watermark over 3 partitions would stall whenever one partition is idle.
        WatermarkStrategy.no_watermarks(),
        "appointment-events",
        type_info=Types.PRIMITIVE_ARRAY(Types.BYTE()),
    ).uid("appointment-events-source")
    results = (
        events.key_by(_constant_key, key_type=Types.INT())
        .process(Aggregate(cfg.metrics_config()), output_type=Types.STRING())
        .uid("analytics-aggregate")
        .name("analytics-aggregate")
    )
    results.sink_to(sink).uid("analytics-results-sink").name("analytics-results")


def flink_configuration(
    *,
    checkpoint_dir: Path | str,
    checkpoint_interval_ms: int,
    python_executable: str | None,
    restore_from: str | None = None,
    extra: dict[str, str] | None = None,
) -> Configuration:
    """Checkpointing, retained checkpoints, and the Python bundle settings tuned for freshness."""
    conf = Configuration()
    uri = (
        checkpoint_dir
        if str(checkpoint_dir).startswith(("file:", "s3:", "hdfs:"))
        else f"file://{checkpoint_dir}"
    )
    settings = {
        "execution.checkpointing.interval": f"{checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": str(uri),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "execution.checkpointing.min-pause": "1 s",
        "state.backend.type": "hashmap",
        "restart-strategy.type": "exponential-delay",
        # Freshness: a Python bundle is flushed after 20 ms or 100 records (defaults: 1 s, 100000),
        # and network buffers after 5 ms (default 100 ms).
        "python.fn-execution.bundle.time": "20",
        "python.fn-execution.bundle.size": "100",
        "execution.buffer-timeout.interval": "5 ms",
        "python.metric.enabled": "true",
    }
    if python_executable:
        settings["python.executable"] = python_executable
        settings["python.client.executable"] = python_executable
    if restore_from:
        settings["execution.state-recovery.path"] = restore_from
    settings.update(extra or {})
    for key, value in settings.items():
        conf.set_string(key, value)
    return conf


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete retained checkpoint (a chk-N folder with _metadata) under any job's folder."""
    if not root.is_dir():
        return None
    found = [m.parent for m in root.glob("*/chk-*/_metadata") if m.is_file()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime, int(p.name.split("-", 1)[1])))


def prune_checkpoints(root: Path, keep: Path | None) -> None:
    """Delete earlier jobs' folders, keeping only the one restored from (each start is a new job id)."""
    if not root.is_dir():
        return
    keep_job = keep.parent if keep else None
    for job_dir in root.iterdir():
        if job_dir.is_dir() and job_dir != keep_job:
            shutil.rmtree(job_dir, ignore_errors=True)


def run(env: StreamExecutionEnvironment, cfg: JobConfig, *, job_name: str, detached: bool = False) -> Any:
    build(env, cfg)
    if detached:
        return env.execute_async(job_name)
    return env.execute(job_name)
