"""The invoice-PDF Lambda handler without services: validation, rendering, the S3 put it makes."""

import ast
import base64
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "lambda" / "invoice_pdf.py"


def _load() -> ModuleType:
    # `lambda` is a keyword, so the handler is loaded by path, as the Lambda runtime does; named by
    # its path, which is how the mutation tool (make mutation) names the module's mutants.
    spec = importlib.util.spec_from_file_location("lambda.invoice_pdf", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


invoice_pdf = _load()

INVOICE_ID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
REQUEST: dict[str, Any] = {
    "invoiceId": INVOICE_ID,
    "patientId": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "amount": "1234.50",
    "date": "2025-03-04",
    "status": "ISSUED",
    "patientName": "Zoë Okafor-Hansen",
    "doctorName": "Dr. Amara Lindqvist",
    "clinicName": "Harbourview Family Clinic",
    "currency": "EUR",
    "appointmentTime": "2025-03-04T14:30:00+01:00",
    "invoiceNumber": "INV-2025-000123",
}


def pdf_text(pdf: bytes) -> str:
    assert shutil.which("pdftotext"), "pdftotext (poppler-utils) is missing: `make setup` installs it"
    done = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return done.stdout.decode()


class FakeS3:
    """Stands in for the boto3 client: records put_object calls, or fails them."""

    def __init__(self, error: Exception | None = None) -> None:
        self.puts: list[dict[str, Any]] = []
        self.error = error

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.puts.append(kwargs)
        return {"ETag": '"etag"'}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> FakeS3:
    fake = FakeS3()
    monkeypatch.setattr(invoice_pdf, "_s3_client", lambda: fake)
    for name in ("INVOICE_BUCKET", "INVOICE_SSE", "INVOICE_KMS_KEY_ID", "INVOICE_CLINIC_NAME"):
        monkeypatch.delenv(name, raising=False)
    return fake


def render(**changes: Any) -> bytes:
    pdf: bytes = invoice_pdf.render_pdf(invoice_pdf.parse_request({**REQUEST, **changes}))
    return pdf


# -- Rendering --------------------------------------------------------------------------------
def test_pdf_shows_the_invoice_facts_on_one_a4_page() -> None:
    pdf = render()
    text = pdf_text(pdf)
    for expected in (
        "Harbourview Family Clinic",
        "INV-2025-000123",
        "2025-03-04",
        "Zoë Okafor-Hansen",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "Dr. Amara Lindqvist",
        "2025-03-04 14:30 (UTC+01:00)",
        "EUR 1,234.50",
        "Amount due",
        "ISSUED",
        INVOICE_ID,
    ):
        assert expected in text, expected
    info = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert "Pages:           1" in info
    assert "595.276 x 841.89 pts (A4)" in info
    assert "Zoë" not in info  # metadata carries no patient data


def test_same_input_renders_the_same_bytes() -> None:
    assert render() == render()
    assert render() != render(status="PAID")


def test_required_fields_alone_render_with_defaults() -> None:
    minimal = {k: REQUEST[k] for k in ("invoiceId", "patientId", "amount", "date", "status")}
    invoice = invoice_pdf.parse_request({**minimal, "amount": 80})
    text = pdf_text(invoice_pdf.render_pdf(invoice))
    assert "INV-3F2504E0" in text  # invoice number derived from the id
    assert "USD 80.00" in text
    assert invoice_pdf.DEFAULT_CLINIC in text


def test_paid_and_void_invoices_say_so() -> None:
    assert "Amount paid" in pdf_text(render(status="paid"))
    assert "Total (void)" in pdf_text(render(status="VOID"))


def test_names_beyond_latin1_render_when_dejavu_is_available() -> None:
    # `make setup` installs fonts-dejavu-core; without it names beyond Latin-1 cannot print.
    assert invoice_pdf._fonts()[0] != "Helvetica", "DejaVu fonts missing: run `make setup`"
    text = pdf_text(render(patientName="Ελένη Иванова"))
    assert "Ελένη Иванова" in text


def test_long_values_stay_on_one_page() -> None:
    pdf = render(patientName="A" * 60 + " " + "B" * 59, doctorName="C " * 60, clinicName="D" * 120)
    info = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert "Pages:           1" in info


# -- Validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"invoiceId": None},
        {"invoiceId": "not-a-uuid"},
        {"invoiceId": "3f2504e04f8911d39a0c0305e82c3301"},
        {"invoiceId": "../../etc/passwd"},
        {"invoiceId": 12345},
        {"patientId": None},
        {"patientId": ""},
        {"patientId": "../x"},
        {"patientId": "p" * 65},
        {"amount": None},
        {"amount": "0"},
        {"amount": "-5.00"},
        {"amount": "10.123"},
        {"amount": "1e3"},
        {"amount": " 10"},
        {"amount": "abc"},
        {"amount": True},
        {"amount": 0.1 + 0.2},
        {"amount": float("nan")},
        {"amount": 10**10},
        {"amount": [10]},
        {"date": None},
        {"date": "2025-13-01"},
        {"date": "yesterday"},
        {"date": 20250304},
        {"status": None},
        {"status": "DRAFT"},
        {"status": 1},
        {"patientName": "Jane\nDoe"},
        {"patientName": "x" * 121},
        {"patientName": 42},
        {"doctorName": "Dr.\x00Who"},
        {"currency": "usd"},
        {"currency": "EURO"},
        {"appointmentTime": "2025-03-04T10:00:00"},
        {"appointmentTime": "soon"},
        {"invoiceNumber": "../INV-1"},
        {"invoiceNumber": 'INV"1'},
        {"invoiceNumber": "I" * 41},
    ],
)
def test_bad_request_answers_400_without_storing(changes: dict[str, Any], s3: FakeS3) -> None:
    answer = invoice_pdf.handler({**REQUEST, **changes}, None)
    assert set(answer) == {"statusCode", "error", "errorType"}
    assert answer["statusCode"] == 400
    assert answer["errorType"] == "BadRequest"
    assert next(iter(changes)) in answer["error"]
    assert s3.puts == []


@pytest.mark.parametrize("event", [None, [], "invoice", 42])
def test_a_request_that_is_not_an_object_answers_400(event: Any, s3: FakeS3) -> None:
    answer = invoice_pdf.handler(event, None)
    assert answer == {
        "statusCode": 400,
        "error": "invalid request: request must be a JSON object",
        "errorType": "BadRequest",
    }


def test_every_bad_field_is_named_but_no_value_is_echoed(
    s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = invoice_pdf.handler(
        {**REQUEST, "amount": "-1", "patientName": "Secret\nPatient", "status": "SECRET-STATUS"}, None
    )
    assert answer["statusCode"] == 400
    for field in ("amount", "patientName", "status"):
        assert field in answer["error"]
    assert "Secret" not in answer["error"] and "SECRET" not in answer["error"]
    (line,) = [r.getMessage() for r in caplog.records if "invoice_pdf" in r.getMessage()]
    logged = json.loads(line)
    assert logged["outcome"] == "rejected"
    assert logged["invoiceId"] == INVOICE_ID
    assert sorted(logged["invalidFields"]) == ["amount", "patientName", "status"]
    assert "Secret" not in line and "SECRET" not in line


def test_optional_fields_may_be_null_or_blank_and_unknown_fields_are_ignored() -> None:
    invoice = invoice_pdf.parse_request(
        {**REQUEST, "patientName": None, "doctorName": "  ", "currency": "", "addedLater": {"x": 1}}
    )
    assert invoice.patient_name is None and invoice.doctor_name is None
    assert invoice.currency == "USD"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("120", "120.00"), ("99.9", "99.90"), (120, "120.00"), (99.95, "99.95"), ("0.01", "0.01")],
)
def test_amounts_are_exact_two_place_decimals(raw: Any, expected: str) -> None:
    assert str(invoice_pdf.parse_request({**REQUEST, "amount": raw}).amount) == expected


def test_date_accepts_an_iso_date_time_and_keeps_its_calendar_day() -> None:
    invoice = invoice_pdf.parse_request({**REQUEST, "date": "2025-03-04T23:30:00-05:00"})
    assert invoice.issued_on.isoformat() == "2025-03-04"


# Valid ISO 8601 date-times of 40 and 41 characters (an offset may carry seconds and a fraction): the
# function reads at most 40, so a huge string costs it nothing to refuse.
ISO_40 = "2025-03-04T10:00:00.1234+05:30:15.123456"
ISO_41 = "2025-03-04T10:00:00.12345+05:30:15.123456"


def test_a_date_or_time_of_at_most_40_characters_is_read_and_a_longer_one_refused(s3: FakeS3) -> None:
    assert len(ISO_40) == 40 and len(ISO_41) == 41
    invoice = invoice_pdf.parse_request({**REQUEST, "date": ISO_40, "appointmentTime": ISO_40})
    assert invoice.issued_on.isoformat() == "2025-03-04"
    assert invoice.appointment_time is not None and invoice.appointment_time.microsecond == 123400
    for field in ("date", "appointmentTime"):
        answer = invoice_pdf.handler({**REQUEST, field: ISO_41}, None)
        assert answer["statusCode"] == 400 and field in answer["error"], field


@pytest.mark.parametrize(
    ("raw", "expected"), [("999999999.99", "999999999.99"), (999_999_999, "999999999.00"), ("0.01", "0.01")]
)
def test_an_amount_up_to_999_999_999_99_is_accepted(raw: Any, expected: str) -> None:
    assert str(invoice_pdf.parse_request({**REQUEST, "amount": raw}).amount) == expected


@pytest.mark.parametrize("raw", ["1000000000", 1_000_000_000, 1e9, "1000000000.00", "0.00", 0])
def test_an_amount_of_a_billion_or_nothing_is_refused(raw: Any, s3: FakeS3) -> None:
    answer = invoice_pdf.handler({**REQUEST, "amount": raw}, None)
    assert answer == {
        "statusCode": 400,
        "error": "invalid request: amount must be a positive decimal below 1e9 with at most 2 places",
        "errorType": "BadRequest",
    }


def test_each_refused_field_is_named_with_its_rule_in_field_order() -> None:
    with pytest.raises(invoice_pdf.BadRequest) as refused:
        invoice_pdf.parse_request({**REQUEST, "invoiceId": None, "status": "DRAFT", "currency": "usd"})
    assert refused.value.fields == ["invoiceId", "status", "currency"]
    assert str(refused.value) == (
        "invalid request: invoiceId is required; status must be one of "
        "ISSUED/OVERDUE/PAID/PENDING/VOID; currency must be an ISO 4217 code such as USD"
    )


@pytest.mark.parametrize("raw_id", ["Jane Doe 1970-01-01", "../../etc/passwd", "3f2504e0-4f89-11d3-9a0c"])
def test_a_rejected_request_never_logs_an_invoice_id_that_is_not_one(
    raw_id: str, s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a caller put in invoiceId (a name, a path) stays out of the log: only a real UUID is."""
    caplog.set_level(logging.INFO)
    answer = invoice_pdf.handler({**REQUEST, "invoiceId": raw_id}, None)
    assert answer["statusCode"] == 400
    (line,) = [r.getMessage() for r in caplog.records if "invoice_pdf" in r.getMessage()]
    logged = json.loads(line)
    assert line == json.dumps(logged, sort_keys=True, separators=(",", ":"))  # one compact line, keys sorted
    assert logged == {
        "correlationId": None,
        "msg": "invoice_pdf",
        "invoiceId": None,
        "outcome": "rejected",
        "invalidFields": ["invoiceId"],
        "requestId": None,
    }
    assert raw_id not in line


def test_a_rejected_request_logs_a_real_invoice_id_lower_case_and_the_request_id(
    s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    context = type("Context", (), {"aws_request_id": "req-1"})()
    invoice_pdf.handler({**REQUEST, "invoiceId": INVOICE_ID.upper(), "amount": "-1"}, context)
    (line,) = [r.getMessage() for r in caplog.records if "invoice_pdf" in r.getMessage()]
    logged = json.loads(line)
    assert (logged["invoiceId"], logged["requestId"], logged["invalidFields"]) == (
        INVOICE_ID,
        "req-1",
        ["amount"],
    )


def test_text_fields_are_trimmed_and_at_most_120_characters() -> None:
    invoice = invoice_pdf.parse_request({**REQUEST, "patientName": "  Ada  ", "doctorName": "D" * 120})
    assert (invoice.patient_name, invoice.doctor_name) == ("Ada", "D" * 120)
    with pytest.raises(invoice_pdf.BadRequest, match="doctorName must be printable text of at most 120"):
        invoice_pdf.parse_request({**REQUEST, "doctorName": "D" * 121})


def test_the_clinic_name_comes_from_the_request_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    minimal = {k: REQUEST[k] for k in ("invoiceId", "patientId", "amount", "date", "status")}
    monkeypatch.setenv("INVOICE_CLINIC_NAME", "Northside Clinic")
    assert invoice_pdf.parse_request(minimal).clinic_name == "Northside Clinic"
    assert invoice_pdf.parse_request(REQUEST).clinic_name == "Harbourview Family Clinic"
    monkeypatch.delenv("INVOICE_CLINIC_NAME")
    assert invoice_pdf.parse_request(minimal).clinic_name == invoice_pdf.DEFAULT_CLINIC


def test_a_parsed_request_keeps_every_field() -> None:
    invoice = invoice_pdf.parse_request({**REQUEST, "invoiceId": INVOICE_ID.upper(), "status": "issued"})
    assert invoice == invoice_pdf.Invoice(
        invoice_id=INVOICE_ID,
        patient_id=REQUEST["patientId"],
        amount=invoice_pdf.Decimal("1234.50"),
        issued_on=invoice_pdf.date(2025, 3, 4),
        status="ISSUED",
        invoice_number="INV-2025-000123",
        currency="EUR",
        clinic_name="Harbourview Family Clinic",
        patient_name="Zoë Okafor-Hansen",
        doctor_name="Dr. Amara Lindqvist",
        appointment_time=invoice_pdf.datetime.fromisoformat("2025-03-04T14:30:00+01:00"),
    )
    assert invoice.key == f"invoices/{INVOICE_ID}.pdf"


# -- Handler and storage ----------------------------------------------------------------------
def test_healthcheck_answers_ok(s3: FakeS3) -> None:
    assert invoice_pdf.handler({"healthcheck": True}, None) == {"statusCode": 200, "status": "ok"}
    assert s3.puts == []


def test_handler_stores_the_pdf_under_a_key_from_the_invoice_id(
    s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = invoice_pdf.handler({**REQUEST, "invoiceId": INVOICE_ID.upper()}, None)
    key = f"invoices/{INVOICE_ID}.pdf"
    (put,) = s3.puts
    body = put.pop("Body")
    assert answer == {
        "statusCode": 200,
        "pdfUrl": f"s3://invoices/{key}",
        "key": key,
        "sha256": hashlib.sha256(body).hexdigest(),
        "bytes": len(body),
    }
    assert body.startswith(b"%PDF-")
    assert put == {
        "Bucket": "invoices",
        "Key": key,
        "ContentType": "application/pdf",
        "ContentDisposition": 'inline; filename="INV-2025-000123.pdf"',
        "CacheControl": "private, no-store",
        "Metadata": {"invoice-id": INVOICE_ID, "sha256": answer["sha256"]},
        "ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "ServerSideEncryption": "AES256",
    }
    (line,) = [r.getMessage() for r in caplog.records if "invoice_pdf" in r.getMessage()]
    logged = json.loads(line)
    assert logged["outcome"] == "stored" and logged["invoiceId"] == INVOICE_ID
    assert "Zoë" not in line and "Okafor" not in line and "Lindqvist" not in line


def test_a_retry_writes_identical_bytes_to_the_same_key(s3: FakeS3) -> None:
    first = invoice_pdf.handler(REQUEST, None)
    second = invoice_pdf.handler(REQUEST, None)
    assert first == second
    assert s3.puts[0] == s3.puts[1]


def test_bucket_and_encryption_come_from_the_environment(s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOICE_BUCKET", "prod-invoices")
    monkeypatch.setenv("INVOICE_SSE", "aws:kms")
    monkeypatch.setenv("INVOICE_KMS_KEY_ID", "alias/invoices")
    answer = invoice_pdf.handler(REQUEST, None)
    assert answer["pdfUrl"] == f"s3://prod-invoices/invoices/{INVOICE_ID}.pdf"
    (put,) = s3.puts
    assert put["Bucket"] == "prod-invoices"
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"] == "alias/invoices"


def test_pdfs_are_encrypted_at_rest_unless_told_otherwise(
    s3: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice_pdf.handler(REQUEST, None)
    monkeypatch.setenv("INVOICE_SSE", "none")
    invoice_pdf.handler(REQUEST, None)
    encrypted, plain = s3.puts
    assert encrypted["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in encrypted
    assert "ServerSideEncryption" not in plain


def test_each_status_has_its_own_key(s3: FakeS3) -> None:
    keys = {
        status: invoice_pdf.handler({**REQUEST, "status": status}, None)["key"]
        for status in ("ISSUED", "PAID", "VOID", "OVERDUE")
    }
    assert keys == {
        "ISSUED": f"invoices/{INVOICE_ID}.pdf",
        "PAID": f"invoices/{INVOICE_ID}-paid.pdf",
        "VOID": f"invoices/{INVOICE_ID}-void.pdf",
        "OVERDUE": f"invoices/{INVOICE_ID}-overdue.pdf",
    }


def test_an_unknown_encryption_mode_fails_loudly(s3: FakeS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOICE_SSE", "rot13")
    with pytest.raises(RuntimeError, match="INVOICE_SSE"):
        invoice_pdf.handler(REQUEST, None)


def test_a_storage_failure_raises_so_the_caller_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    error = ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject")
    monkeypatch.setattr(invoice_pdf, "_s3_client", lambda: FakeS3(error))
    with pytest.raises(ClientError):
        invoice_pdf.handler(REQUEST, None)
    (line,) = [r.getMessage() for r in caplog.records if "invoice_pdf" in r.getMessage()]
    assert json.loads(line)["outcome"] == "store_failed"


# -- The one log line of each outcome ---------------------------------------------------------
# Each invocation logs one JSON line: the invoice id, the outcome, the ids that tie it to the caller's
# request (Lambda's request id, the caller's correlation id) and, when stored, size and duration. An
# operator joins a failed render or store to the API's log by these ids, so each is checked in full.
def _context(request_id: str = "req-7", correlation_id: str = "corr-7") -> Any:
    client_context = SimpleNamespace(custom={"correlationId": correlation_id})
    return SimpleNamespace(aws_request_id=request_id, client_context=client_context)


def _log_line(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    (line,) = [r.getMessage() for r in caplog.records if "invoice_pdf" in r.getMessage()]
    logged: dict[str, Any] = json.loads(line)
    return logged


def test_the_stored_log_line_names_size_duration_and_both_request_ids(
    s3: FakeS3, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    clock = iter([100.0, 102.0])  # the handler reads the clock when called and when stored
    monkeypatch.setattr(invoice_pdf, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    answer = invoice_pdf.handler(REQUEST, _context())
    assert _log_line(caplog) == {
        "msg": "invoice_pdf",
        "invoiceId": INVOICE_ID,
        "outcome": "stored",
        "bytes": answer["bytes"],
        "requestId": "req-7",
        "correlationId": "corr-7",
        "durationMs": 2000,
    }
    assert answer["bytes"] == len(s3.puts[0]["Body"])


def test_a_failed_store_logs_the_stage_the_error_type_and_both_request_ids(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    error = ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject")
    monkeypatch.setattr(invoice_pdf, "_s3_client", lambda: FakeS3(error))
    with pytest.raises(ClientError):
        invoice_pdf.handler(REQUEST, _context())
    assert _log_line(caplog) == {
        "msg": "invoice_pdf",
        "invoiceId": INVOICE_ID,
        "outcome": "store_failed",
        "errorType": "ClientError",
        "requestId": "req-7",
        "correlationId": "corr-7",
    }


def test_a_failed_render_is_logged_as_a_render_failure_and_stores_nothing(
    s3: FakeS3, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def broken(_: Any) -> bytes:
        raise MemoryError

    monkeypatch.setattr(invoice_pdf, "render_pdf", broken)
    with pytest.raises(MemoryError):
        invoice_pdf.handler(REQUEST, _context())
    assert s3.puts == []
    assert _log_line(caplog) == {
        "msg": "invoice_pdf",
        "invoiceId": INVOICE_ID,
        "outcome": "render_failed",
        "errorType": "MemoryError",
        "requestId": "req-7",
        "correlationId": "corr-7",
    }


def test_a_rejected_request_logs_the_callers_correlation_id(
    s3: FakeS3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = invoice_pdf.handler({**REQUEST, "amount": "0"}, _context(correlation_id="booking-42"))
    assert answer["statusCode"] == 400
    assert _log_line(caplog) == {
        "msg": "invoice_pdf",
        "invoiceId": INVOICE_ID,
        "outcome": "rejected",
        "invalidFields": ["amount"],
        "requestId": "req-7",
        "correlationId": "booking-42",
    }


# -- Client and packaging rules ---------------------------------------------------------------
@pytest.fixture
def fresh_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    invoice_pdf._s3_client.cache_clear()
    yield invoice_pdf._s3_client
    invoice_pdf._s3_client.cache_clear()


def test_s3_client_takes_the_local_endpoint_from_the_standard_variable(
    fresh_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:8333")
    client = fresh_client()
    assert client.meta.endpoint_url == "http://127.0.0.1:8333"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.signature_version == "s3v4"
    assert fresh_client() is client  # one client per container


def test_s3_client_on_aws_uses_default_addressing(fresh_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = fresh_client()
    assert client.meta.endpoint_url.startswith("https://")
    assert not client.meta.config.s3


def test_handler_imports_only_stdlib_boto3_and_reportlab() -> None:
    tree = ast.parse(HANDLER.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"boto3", "botocore", "reportlab"}


@pytest.mark.parametrize(
    "name",
    ["Ann\tLee", "Line\nbreak\r\nname", "x" * 150, "Zoë " * 60, "\x00\x1f", "  padded  "],
)
def test_names_the_api_accepts_are_sent_in_a_shape_the_function_accepts(name: str) -> None:
    """The API allows 200-character names and stored records may hold control characters; the
    billing activity cleans them so the function never refuses a bill for good (a 400)."""
    from activities.billing import PDF_MAX_TEXT, _pdf_text

    assert PDF_MAX_TEXT == invoice_pdf.MAX_NAME
    with pytest.raises(invoice_pdf.BadRequest):
        invoice_pdf.parse_request({**REQUEST, "patientName": name + "\t" + "y" * 200})  # raw: refused
    cleaned = _pdf_text(name)
    invoice = invoice_pdf.parse_request({**REQUEST, "patientName": cleaned, "doctorName": cleaned})
    assert invoice_pdf.render_pdf(invoice).startswith(b"%PDF")
    assert cleaned is None or (len(cleaned) <= invoice_pdf.MAX_NAME and cleaned.isprintable())


def test_the_function_knows_every_invoice_status_and_no_other() -> None:
    """The Lambda deploys alone, so it keeps its own copy of the vocabulary; this ties the two.
    NEEDS_ATTENTION is the one status no PDF shows: it means the PDF could not be made."""
    from healthcare.contracts.billing import InvoiceStatus

    printable = {status.value for status in InvoiceStatus} - {InvoiceStatus.needs_attention.value}
    assert set(invoice_pdf.STATUSES) == printable


def test_every_rule_is_named_in_the_400_exactly() -> None:
    """The 400 names each field with its rule (the billing run shows it to an operator)."""
    with pytest.raises(invoice_pdf.BadRequest) as refused:
        invoice_pdf.parse_request(
            {
                **REQUEST,
                "invoiceId": "INV-1",
                "amount": True,
                "date": 20250304,
                "appointmentTime": "2025-03-04T14:30",
            }
        )
    assert str(refused.value) == (
        "invalid request: invoiceId must be a UUID; amount must be a decimal string or number; "
        "date must be an ISO 8601 date; appointmentTime must be an ISO 8601 date-time with offset"
    )
    with pytest.raises(invoice_pdf.BadRequest) as refused:
        invoice_pdf.parse_request({**REQUEST, "date": "the fourth of March"})
    assert str(refused.value) == "invalid request: date must be an ISO 8601 date"
    with pytest.raises(invoice_pdf.BadRequest) as refused:
        invoice_pdf.parse_request(["not", "an", "object"])
    assert refused.value.fields == ["(request)"] and str(refused.value) == (
        "invalid request: request must be a JSON object"
    )


def test_a_blank_optional_field_is_skipped_and_the_ones_after_it_still_checked() -> None:
    with pytest.raises(invoice_pdf.BadRequest) as refused:
        invoice_pdf.parse_request({**REQUEST, "patientName": " ", "currency": "euro"})
    assert refused.value.fields == ["currency"]
    parsed = invoice_pdf.parse_request({**REQUEST, "patientName": "", "invoiceNumber": None})
    assert parsed.patient_name is None and parsed.doctor_name == REQUEST["doctorName"]
    assert parsed.invoice_number == "INV-" + INVOICE_ID[:8].upper()  # the default: the id's first 8


def test_a_pattern_rule_refuses_what_does_not_match_and_what_is_not_text() -> None:
    check = invoice_pdf._matching(re.compile("[A-Z]{3}"), "must be three capitals")
    assert check("USD") == "USD"
    for bad in ("usd", "USDX", 840, None):
        with pytest.raises(ValueError) as refused:
            check(bad)
        assert str(refused.value) == "must be three capitals"
