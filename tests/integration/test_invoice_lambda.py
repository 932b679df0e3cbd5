"""The invoice-PDF Lambda through the real stack: Invoke API -> emulator -> handler -> S3 storage."""

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from healthcare.settings import Settings


def invoke(lambda_client: Any, settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
    response = lambda_client.invoke(
        FunctionName=settings.lambda_function_name, Payload=json.dumps(payload).encode()
    )
    body: dict[str, Any] = json.loads(response["Payload"].read())
    # The local emulator does not set FunctionError on an unhandled error
    # (aws-lambda-runtime-interface-emulator#20): such a payload has no statusCode.
    assert response["StatusCode"] == 200 and "FunctionError" not in response, body
    assert "statusCode" in body, body
    return body


def pdf_text(pdf: bytes) -> str:
    done = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return done.stdout.decode()


@pytest.fixture
def request_body(s3: Any, settings: Settings) -> Iterator[dict[str, Any]]:
    invoice_id = str(uuid.uuid4())
    yield {
        "invoiceId": invoice_id,
        "patientId": str(uuid.uuid4()),
        "amount": "1234.50",
        "date": "2025-03-04",
        "status": "ISSUED",
        "patientName": "Zoë Okafor-Hansen",
        "doctorName": "Dr. Amara Lindqvist",
        "currency": "EUR",
        "appointmentTime": "2025-03-04T14:30:00+01:00",
        "invoiceNumber": f"INV-{invoice_id[:8]}",
    }
    s3.delete_object(Bucket=settings.s3_bucket, Key=f"invoices/{invoice_id}.pdf")


def test_the_invoice_pdf_lands_in_the_private_bucket(
    lambda_client: Any, s3: Any, settings: Settings, request_body: dict[str, Any]
) -> None:
    answer = invoke(lambda_client, settings, request_body)
    key = f"invoices/{request_body['invoiceId']}.pdf"
    assert answer == {
        "statusCode": 200,
        "pdfUrl": f"s3://{settings.s3_bucket}/{key}",
        "key": key,
        "sha256": answer["sha256"],
        "bytes": answer["bytes"],
    }
    stored = s3.get_object(Bucket=settings.s3_bucket, Key=key)
    pdf = stored["Body"].read()
    assert stored["ContentType"] == "application/pdf"
    assert hashlib.sha256(pdf).hexdigest() == answer["sha256"]
    assert len(pdf) == answer["bytes"]
    text = pdf_text(pdf)
    assert "Zoë Okafor-Hansen" in text
    assert request_body["patientId"] in text
    assert request_body["invoiceNumber"] in text
    assert "EUR 1,234.50" in text


def test_a_retry_overwrites_the_one_object_with_identical_bytes(
    lambda_client: Any, s3: Any, settings: Settings, request_body: dict[str, Any]
) -> None:
    first = invoke(lambda_client, settings, request_body)
    second = invoke(lambda_client, settings, request_body)
    assert first == second
    listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"invoices/{request_body['invoiceId']}")
    assert [o["Key"] for o in listed.get("Contents", [])] == [first["key"]]
    pdf = s3.get_object(Bucket=settings.s3_bucket, Key=first["key"])["Body"].read()
    assert hashlib.sha256(pdf).hexdigest() == first["sha256"]


def test_a_bad_request_answers_400_and_stores_nothing(
    lambda_client: Any, s3: Any, settings: Settings, request_body: dict[str, Any]
) -> None:
    answer = invoke(lambda_client, settings, {**request_body, "amount": "-1"})
    assert answer["statusCode"] == 400
    assert answer["errorType"] == "BadRequest"
    assert "amount" in answer["error"]
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=settings.s3_bucket, Key=f"invoices/{request_body['invoiceId']}.pdf")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")


def test_the_health_invocation_still_answers_ok(lambda_client: Any, settings: Settings) -> None:
    assert invoke(lambda_client, settings, {"healthcheck": True}) == {"statusCode": 200, "status": "ok"}
