"""Stored histories replay against the current code: a non-deterministic change fails here.

A workflow patch is guarded at each stage of its life (README, "Changing a workflow"): histories
recorded with its marker and, once it is deprecated, histories recorded with the deprecated marker.

Histories come in both forms the server holds: plaintext ones, recorded before payloads were
encrypted, and `encrypted_*` ones, written under HISTORY_KEY_ID (a test key, recorded by
tests/workflows/test_encrypted_histories.py). All of them replay with a keyring whose active key is
another one: the stored histories' key has rotated out of use and still decrypts.
"""

import base64
import json
from pathlib import Path

import pytest
from temporalio.api.history.v1 import History
from temporalio.client import WorkflowHistory

from healthcare import codec
from healthcare.settings import get_settings
from ops.replay import replay_history

HISTORIES = Path(__file__).parent / "histories"
# A test key, not a secret: it encrypts nothing but the stored test histories.
HISTORY_KEY_ID = "history-fixture-1"
HISTORY_KEYRING = codec.Keyring.parse(
    f"{HISTORY_KEY_ID}:7yAeSxlH1ShyN9w4frlxdBz0JWUi47M1+0DvItYSOwc=", HISTORY_KEY_ID
)


def rotated_keyring() -> codec.Keyring:
    """The configured keys plus the stored histories' key, which no longer encrypts."""
    configured = codec.keyring(get_settings())
    return codec.Keyring(keys={**configured.keys, **HISTORY_KEYRING.keys}, active=configured.active)


PATHS = sorted(HISTORIES.glob("*.json"))


def test_every_path_of_both_workflows_has_a_stored_history() -> None:
    """A change to a branch no stored history went through would replay clean: keep one per path.
    `make histories` adds the missing ones (tests/workflows/capture.py)."""
    names = {p.stem.split(".")[0] for p in PATHS}  # <name>.<time>.json: a later capture
    # Recorded with the `billing-local-db-steps-v1` and `outbox-v1` markers: runs like them may be open.
    billing = {"paid", "cancelled", "overdue", "lambda_retried"}
    appointments = {"appointment_outbox_cancelled", "appointment_outbox_completed"}
    # Recorded since both patches are deprecated: what the code without the calls must replay.
    deprecated = {"paid_deprecated_marker", "appointment_deprecated_marker_cancelled"}
    # Written with encrypted payloads and failure messages (encrypted_pdf_rejected before
    # `billing-pdf-attention-v1`: a run failed by its PDF step; the attention one after it).
    encrypted = {
        "encrypted_paid",
        "encrypted_pdf_rejected",
        "encrypted_pdf_attention_cancelled",
        "encrypted_appointment_cancelled",
    }
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
    # The other paths: cancelled before the invoice, overdue then void; a no-show, and a booking
    # refused (a taken slot).
    paths = {
        "unbilled_cancelled_before_invoice",
        "overdue_void",
        "appointment_no_show",
        "appointment_rejected",
    }
    # Recorded with `billing-cancel-before-issue-v1`: cancelled before the invoice (none found, or a
    # lost task's row voided); cancelled while the first PDF renders, the run takes no marker (issued
    # with the PDF, then VOID).
    paths |= {
        "cancel_before_issue_unbilled",
        "cancel_before_issue_stray_void",
        "cancel_while_first_pdf_renders",
    }
    # A payment racing a cancellation, the first accepted wins: accepted while PAID is recorded; both
    # in one workflow task, either order; either order while the first PDF renders.
    paths |= {
        "race_pay_accepted_then_cancel",
        "race_cancel_first_one_task",
        "race_pay_first_one_task",
        "race_cancel_first_while_pdf_renders",
        "race_pay_first_while_pdf_renders",
    }
    # Recorded with `billing-lost-task-payment-v1`: a payment a lost task recorded, then a cancellation
    # the retried task saw first (PAID wins; before the patch the run failed).
    paths.add("lost_task_payment_then_cancel")
    assert billing | appointments | deprecated | encrypted | pdf_attention | status_pdf | paths <= names
    # Both patches in one run: the operator waits of the first PDF as runs take them now (a PDF per
    # status after), and a status's PDF that fails for good and waits in turn.
    assert set(BOTH_PATCHES) <= names


def test_every_stored_file_is_a_history_the_replay_test_reads() -> None:
    assert {p.name for p in HISTORIES.iterdir()} == {p.name for p in PATHS}


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


TEXTS = {p.stem: p.read_text() for p in PATHS}
ENCRYPTED = sorted(name for name in TEXTS if name.startswith("encrypted_"))


@pytest.mark.parametrize("name", sorted(TEXTS))
async def test_history_replays(name: str) -> None:
    converter = codec.data_converter(rotated_keyring())
    ok, error = await replay_history(TEXTS[name], workflow_id=name, converter=converter)
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


@pytest.mark.parametrize("name", ENCRYPTED)
def test_encrypted_histories_hold_ciphertext_under_their_key(name: str) -> None:
    history = WorkflowHistory.from_json(name, TEXTS[name])
    raw = History(events=history.events).SerializeToString()
    for plain in (b"HIV follow-up", b"Ada Lovelace", b"INSERT INTO"):
        assert plain not in raw, plain
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert started and all(p.metadata["encoding"] == codec.ENCODING for p in started)
    assert all(p.metadata[codec.KEY_ID] == HISTORY_KEY_ID.encode() for p in started)


@pytest.mark.parametrize("name", ENCRYPTED)
async def test_an_encrypted_history_needs_its_key(name: str) -> None:
    with pytest.raises(codec.CodecError, match=f"unknown key '{HISTORY_KEY_ID}'"):
        await replay_history(TEXTS[name], workflow_id=name, converter=codec.data_converter(get_settings()))


@pytest.mark.parametrize("name", ["paid", "encrypted_paid"])
async def test_a_changed_workflow_is_caught(name: str) -> None:
    # Same history with the PDF activity renamed: what a non-deterministic code change looks like.
    changed = TEXTS[name].replace("billing.render_pdf", "billing.render_pdf_v2")
    assert changed != TEXTS[name]
    converter = codec.data_converter(rotated_keyring())
    ok, error = await replay_history(changed, converter=converter)
    assert not ok and error
