"""Stored histories replay against the current code: a non-deterministic change fails here.

A workflow patch is guarded at each stage of its life (README, "Changing a workflow"): histories
recorded with its marker and, once it is deprecated, histories recorded with the deprecated marker.
"""

from pathlib import Path

import pytest

from ops.replay import replay_history

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_path_of_both_workflows_has_a_stored_history() -> None:
    """A change to a branch no stored history went through would replay clean: keep one per path.
    `make histories` adds the missing ones (tests/workflows/capture.py)."""
    names = {p.stem.split(".")[0] for p in HISTORIES}  # <name>.<time>.json: a later capture
    # Recorded with the `billing-local-db-steps-v1` and `outbox-v1` markers: runs like them may be open.
    billing = {"paid", "cancelled", "overdue", "lambda_retried"}
    appointments = {"appointment_outbox_cancelled", "appointment_outbox_completed"}
    # Recorded since both patches are deprecated: what the code without the calls must replay.
    deprecated = {"paid_deprecated_marker", "appointment_deprecated_marker_cancelled"}
    # `billing-pdf-attention-v1` (introduced): the old path, a run failed by its PDF step (no marker),
    # and each way out of the new path's wait for an operator (retried, cancelled, paid meanwhile).
    pdf_attention = {"pdf_rejected", "pdf_attention_retried", "pdf_attention_cancelled", "pdf_attention_paid"}
    # The other paths: cancelled before the invoice, overdue then void; a no-show, and a booking
    # refused (a taken slot).
    paths = {
        "unbilled_cancelled_before_invoice",
        "overdue_void",
        "appointment_no_show",
        "appointment_rejected",
    }
    assert billing | appointments | deprecated | pdf_attention | paths <= names


def test_every_stored_file_is_a_history_the_replay_test_reads() -> None:
    folder = Path(__file__).parent / "histories"
    assert {p.name for p in folder.iterdir()} == {p.name for p in HISTORIES}


TEXTS = {p.stem: p.read_text() for p in HISTORIES}


@pytest.mark.parametrize("name", sorted(TEXTS))
async def test_history_replays(name: str) -> None:
    ok, error = await replay_history(TEXTS[name], workflow_id=name)
    assert ok, error


async def test_a_changed_workflow_is_caught() -> None:
    # Same history with the PDF activity renamed: what a non-deterministic code change looks like.
    ok, error = await replay_history(TEXTS["paid"].replace("billing.render_pdf", "billing.render_pdf_v2"))
    assert not ok and error
