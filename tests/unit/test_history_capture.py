"""`make histories` adds what is missing and never replaces a stored history (tests/workflows/capture.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows import capture


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    stored, captured = tmp_path / "histories", tmp_path / "captured"
    stored.mkdir()
    captured.mkdir()
    monkeypatch.setattr(capture, "HISTORIES", stored)
    monkeypatch.setattr(capture, "ROOT", tmp_path)
    (stored / "paid.json").write_text("old")
    (captured / "paid.json").write_text("new")
    (captured / "overdue_void.json").write_text("fresh")
    return stored, captured


def test_a_new_path_is_added_and_a_stored_one_kept(folders: tuple[Path, Path]) -> None:
    stored, captured = folders
    lines = capture.store(captured, new=False)
    assert (stored / "paid.json").read_text() == "old"
    assert (stored / "overdue_void.json").read_text() == "fresh"
    assert sorted(p.name for p in stored.iterdir()) == ["overdue_void.json", "paid.json"]
    assert any(line.startswith("kept") and "paid.json" in line for line in lines)


def test_with_new_a_recapture_is_stored_beside_the_old_one(folders: tuple[Path, Path]) -> None:
    stored, captured = folders
    capture.store(captured, new=True)
    assert (stored / "paid.json").read_text() == "old"
    beside = [p for p in stored.glob("paid.*.json")]
    assert len(beside) == 1 and beside[0].read_text() == "new"


def test_keep_history_writes_nothing_outside_a_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(capture.ENV, raising=False)

    class History:
        def to_json(self) -> str:
            raise AssertionError("read outside a capture")

    capture.keep_history(History(), "paid")  # type: ignore[arg-type]
    monkeypatch.setenv(capture.ENV, str(tmp_path))
    with pytest.raises(AssertionError):
        capture.keep_history(History(), "paid")  # type: ignore[arg-type]
