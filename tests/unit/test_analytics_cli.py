"""`python -m analytics_flink`: the HC_ANALYTICS_* variables reach the job through the settings object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_flink.__main__ import job_parser, submit_argv
from healthcare.settings import get_settings


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_submit_passes_the_analytics_settings_and_the_job_accepts_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_settings: None
) -> None:
    (tmp_path / "connector.jar").write_bytes(b"jar")
    monkeypatch.setenv("HC_ANALYTICS_GROUP_ID", "analytics-unit")
    monkeypatch.setenv("HC_ANALYTICS_CHECKPOINT_INTERVAL_MS", "750")
    monkeypatch.setenv("HC_ANALYTICS_CONNECTOR_DIR", str(tmp_path))
    monkeypatch.setenv("HC_ANALYTICS_CHECKPOINT_DIR", "s3://bucket/checkpoints")

    argv = submit_argv(["--jobmanager", "127.0.0.1:8081"])

    assert argv[argv.index("--jarfile") + 1] == str(tmp_path / "connector.jar")
    job = job_parser().parse_args(argv[argv.index("job") + 1 :])
    assert (job.group_id, job.checkpoint_interval_ms, job.checkpoint_dir) == (
        "analytics-unit",
        750,
        "s3://bucket/checkpoints",
    )


def test_a_flag_wins_over_its_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_settings: None
) -> None:
    (tmp_path / "connector.jar").write_bytes(b"jar")
    monkeypatch.setenv("HC_ANALYTICS_GROUP_ID", "from-settings")
    monkeypatch.setenv("HC_ANALYTICS_CONNECTOR_DIR", str(tmp_path))

    argv = submit_argv(["--jobmanager", "127.0.0.1:8081", "--group-id", "from-flag"])

    assert job_parser().parse_args(argv[argv.index("job") + 1 :]).group_id == "from-flag"
