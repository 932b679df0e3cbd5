"""Stored histories replay against the current code: a non-deterministic change fails here.

A workflow patch is guarded at each stage of its life (README, "Changing a workflow"): histories
recorded with its marker and, once it is deprecated, histories recorded with the deprecated marker.
"""

import base64
import json
from pathlib import Path

import pytest

from ops.replay import replay_history

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_the_required_histories_are_stored() -> None:
    names = {p.stem for p in HISTORIES}
    # Recorded with the `billing-local-db-steps-v1` and `outbox-v1` markers: runs like them may be open.
    billing = {"paid", "cancelled", "overdue", "lambda_retried"}
    appointments = {"appointment_outbox_cancelled", "appointment_outbox_completed"}
    # Recorded since both patches are deprecated: what the code without the calls must replay.
    deprecated = {"paid_deprecated_marker", "appointment_deprecated_marker_cancelled"}
    # `billing-pdf-attention-v1` (introduced): the old path, a run failed by its PDF step (no marker),
    # and each way out of the new path's wait for an operator (retried, cancelled, paid meanwhile).
    pdf_attention = {"pdf_rejected", "pdf_attention_retried", "pdf_attention_cancelled", "pdf_attention_paid"}
    # Recorded with `billing-status-pdf-v1` (a PDF per status): the new path; the ones above (no
    # marker) are the old path, which runs started before it still take.
    status_pdf = {
        "status_pdf_paid",
        "status_pdf_cancelled",
        "status_pdf_overdue",
        "status_pdf_lambda_retried",
    }
    assert billing | appointments | deprecated | pdf_attention | status_pdf <= names
    # Both patches in one run: the operator waits of the first PDF as runs take them now (a PDF per
    # status after), and a status's PDF that fails for good and waits in turn.
    assert set(BOTH_PATCHES) <= names


# Each recorded with both markers, `billing-pdf-attention-v1` where its PDF step first failed for
# good and `billing-status-pdf-v1` after the first status change once issued.
BOTH_PATCHES = {
    "status_pdf_attention_retried": ("billing-pdf-attention-v1", "billing-status-pdf-v1"),
    "status_pdf_attention_paid": ("billing-pdf-attention-v1", "billing-status-pdf-v1"),
    "status_pdf_attention_cancelled": ("billing-pdf-attention-v1",),  # never issued: no status PDF
    "status_pdf_attention_after_paid": ("billing-status-pdf-v1", "billing-pdf-attention-v1"),
    "status_pdf_attention_after_void": ("billing-status-pdf-v1", "billing-pdf-attention-v1"),
    "status_pdf_attention_overdue_cancelled": ("billing-status-pdf-v1", "billing-pdf-attention-v1"),
}


TEXTS = {p.stem: p.read_text() for p in HISTORIES}


@pytest.mark.parametrize("name", sorted(TEXTS))
async def test_history_replays(name: str) -> None:
    ok, error = await replay_history(TEXTS[name], workflow_id=name)
    assert ok, error


def patch_markers(text: str) -> list[str]:
    """The patch ids a history's markers record, in order (the deprecated LOCAL_DB_STEPS aside)."""
    ids = []
    for event in json.loads(text)["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker["markerName"] == "core_patch":
            data = json.loads(base64.b64decode(marker["details"]["patch-data"]["payloads"][0]["data"]))
            ids.append(data["id"])
    return [i for i in ids if i != "billing-local-db-steps-v1"]


@pytest.mark.parametrize("name", sorted(BOTH_PATCHES))
def test_combined_histories_carry_both_markers_in_order(name: str) -> None:
    assert patch_markers(TEXTS[name]) == list(BOTH_PATCHES[name])


async def test_a_changed_workflow_is_caught() -> None:
    # Same history with the PDF activity renamed: what a non-deterministic code change looks like.
    ok, error = await replay_history(TEXTS["paid"].replace("billing.render_pdf", "billing.render_pdf_v2"))
    assert not ok and error
