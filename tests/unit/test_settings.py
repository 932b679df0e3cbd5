"""Settings: local defaults work with nothing set; production refuses every local default."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from healthcare.codec import generate_key
from healthcare.settings import Settings

# What a production deployment sets: real secrets, TLS everywhere, AWS endpoints (unset).
HARDENED: dict[str, Any] = {
    "env": "production",
    "database_url": "postgresql+asyncpg://app:s3cret-app-pw@db.internal:5432/healthcare?ssl=verify-full",
    "database_owner_url": "postgresql+asyncpg://owner:s3cret-owner-pw@db.internal:5432/healthcare?ssl=require",
    "jwt_secret": "j" * 40,
    "aws_secret_access_key": "real-secret",
    "audit_hmac_key": "a" * 40,
    "payment_provider": "none",
    "payment_webhook_secret": "w" * 40,
    "payment_provider_api_key": "k" * 40,
    "kafka_security_protocol": "SASL_SSL",
    "s3_endpoint_url": None,
    "lambda_endpoint_url": None,
    "payload_keys": f"prod-1:{generate_key()}",
    "payload_key_id": "prod-1",
    "temporal_api_key": "cloud-api-key",
}


def test_local_defaults_need_no_environment() -> None:
    s = Settings()
    assert s.env == "local"
    assert s.database_url.startswith("postgresql+asyncpg://")
    assert s.database_url_sync.startswith("postgresql://")
    assert s.jwt_algorithm == "HS256"


def test_production_accepts_hardened_settings() -> None:
    s = Settings(**HARDENED)
    assert s.env == "production"
    assert s.codec_cookie_is_secure


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"jwt_secret": "local-dev-only-jwt-secret-change-me-0123456789"}, "HC_JWT_SECRET"),
        ({"jwt_secret": "short"}, "HC_JWT_SECRET must be at least 32"),
        ({"aws_secret_access_key": "healthcare-local-secret"}, "HC_AWS_SECRET_ACCESS_KEY"),
        ({"audit_hmac_key": "local-dev-only-audit-hmac-key-change-me-0123456789"}, "HC_AUDIT_HMAC_KEY"),
        ({"audit_hmac_key": "too-short"}, "HC_AUDIT_HMAC_KEY must be at least 32"),
        (
            {
                "payment_provider": "local",
                "payment_webhook_secret": "local-dev-only-payment-webhook-secret-0123456789",
            },
            "HC_PAYMENT_WEBHOOK_SECRET has its local default",
        ),
        ({"payment_provider": "local"}, "HC_PAYMENT_PROVIDER=local"),
        (
            {"database_url": "postgresql+asyncpg://healthcare:healthcare@db:5432/healthcare?ssl=require"},
            "HC_DATABASE_URL has no password or the local default",
        ),
        ({"database_url": "postgresql+asyncpg://app:pw-real@db:5432/hc"}, "HC_DATABASE_URL must ask for TLS"),
        ({"database_url": "postgresql+asyncpg://app:pw-real@db:5432/hc?ssl=prefer"}, "HC_DATABASE_URL must"),
        ({"database_owner_url": "postgresql+asyncpg://o:pw@db/hc?ssl=disable"}, "HC_DATABASE_OWNER_URL must"),
        ({"kafka_security_protocol": "PLAINTEXT"}, "HC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "HC_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"),
        ({"s3_endpoint_url": "http://minio:9000"}, "HC_S3_ENDPOINT_URL must be https://"),
        ({"lambda_endpoint_url": "http://lambda:8080"}, "HC_LAMBDA_ENDPOINT_URL must be https://"),
        ({"dynamodb_endpoint_url": "http://dynamo:8000"}, "HC_DYNAMODB_ENDPOINT_URL must be https://"),
    ],
)
def test_production_refuses_each_local_default(override: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(**{**HARDENED, **override})
    assert named in str(err.value)


def test_production_names_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as err:
        Settings(env="production")
    for name in (
        "HC_JWT_SECRET",
        "HC_AWS_SECRET_ACCESS_KEY",
        "HC_DATABASE_URL",
        "HC_KAFKA_SECURITY_PROTOCOL",
        "HC_PAYLOAD_KEYS",
        "TLS or an API key",
    ):
        assert name in str(err.value)


def test_token_lifetime_is_capped() -> None:
    with pytest.raises(ValidationError, match="HC_JWT_TTL_SECONDS must not exceed"):
        Settings(jwt_ttl_seconds=7 * 24 * 3600)


def test_migrations_run_as_the_owner_role_by_default() -> None:
    s = Settings(database_url="postgresql+asyncpg://healthcare:healthcare@127.0.0.1:6000/hc_test")
    assert s.app_role == "healthcare"
    assert (
        s.owner_database_url
        == "postgresql+asyncpg://healthcare_owner:healthcare_owner@127.0.0.1:6000/hc_test"
    )
    explicit = Settings(database_owner_url="postgresql+asyncpg://boss:pw@db/hc")
    assert explicit.owner_database_url == "postgresql+asyncpg://boss:pw@db/hc"
    # A production migration Job that holds only the owner's URL names the app role apart.
    job = Settings(**{**HARDENED, "database_owner_url": None, "database_app_role": "clinic_app"})
    assert job.owner_database_url == job.database_url and job.app_role == "clinic_app"


def test_payment_secrets_are_not_checked_when_online_payment_is_off() -> None:
    defaults = {"payment_webhook_secret": "local-dev-only-payment-webhook-secret-0123456789"}
    assert Settings(**{**HARDENED, **defaults}).payment_provider == "none"


def test_production_refuses_the_local_payload_key_even_as_an_old_key() -> None:
    local = Settings().payload_keys.get_secret_value()
    with pytest.raises(ValidationError, match="HC_PAYLOAD_KEYS"):
        Settings(**{**HARDENED, "payload_keys": f"{HARDENED['payload_keys']},{local}"})


def test_production_refuses_temporal_without_tls_or_api_key() -> None:
    with pytest.raises(ValidationError, match="without TLS or an API key"):
        Settings(**{**HARDENED, "temporal_api_key": None})
    mtls = Settings(
        **{**HARDENED, "temporal_api_key": None},
        temporal_tls_cert_file="/certs/client.pem",
        temporal_tls_key_file="/certs/client.key",
    )
    assert mtls.temporal_tls_enabled


def test_mtls_needs_both_certificate_and_key() -> None:
    with pytest.raises(ValidationError, match="go together"):
        Settings(temporal_tls_cert_file="/certs/client.pem")


def test_payload_keys_are_checked_at_start() -> None:
    with pytest.raises(ValidationError, match="HC_PAYLOAD_KEY_ID"):
        Settings(payload_key_id="missing")


def test_codec_origins_default_to_the_temporal_ui() -> None:
    assert Settings(temporal_ui_url="http://127.0.0.1:8233/").codec_origins == ["http://127.0.0.1:8233"]
    given = Settings(codec_cors_origins="https://ui.example.com/, https://cloud.temporal.io")
    assert given.codec_origins == ["https://ui.example.com", "https://cloud.temporal.io"]
    with pytest.raises(ValidationError, match="SAMESITE=none"):
        Settings(codec_cookie_samesite="none")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HC_API_PORT", "9100")
    monkeypatch.setenv("HC_BCRYPT_ROUNDS", "9")
    with pytest.raises(ValidationError):
        Settings()  # bcrypt cost below 10 is refused
    monkeypatch.setenv("HC_BCRYPT_ROUNDS", "11")
    assert Settings().api_port == 9100


def test_empty_endpoint_selects_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment on AWS sets the endpoints empty (an environment variable cannot unset a default)."""
    for name in ("HC_S3_ENDPOINT_URL", "HC_LAMBDA_ENDPOINT_URL", "HC_DYNAMODB_ENDPOINT_URL"):
        monkeypatch.setenv(name, "")
    s = Settings()
    assert (s.s3_endpoint_url, s.lambda_endpoint_url, s.dynamodb_endpoint_url) == (None, None, None)
    monkeypatch.delenv("HC_S3_ENDPOINT_URL")
    monkeypatch.setenv("HC_PROFILE", "dev")
    assert Settings().s3_endpoint_url == "http://127.0.0.1:8333"


def test_production_with_a_workload_role_needs_no_aws_keys() -> None:
    """No static key id: boto3's credential chain (IRSA, Pod Identity) is used, nothing to refuse."""
    chain = {**HARDENED, "aws_secret_access_key": "healthcare-local-secret"}
    s = Settings(**{**chain, "aws_access_key_id": ""})
    assert s.aws_access_key_id == ""
    with pytest.raises(ValidationError, match="HC_AWS_SECRET_ACCESS_KEY"):
        Settings(**{**chain, "aws_access_key_id": "AKIAEXAMPLE"})


def test_aws_clients_use_the_credential_chain_without_a_key_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from healthcare import clients

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-chain")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    chained = clients.s3_client(Settings(aws_access_key_id=""))
    assert chained._request_signer._credentials.access_key == "from-the-chain"
    static = clients.s3_client(Settings())
    assert static._request_signer._credentials.access_key == "healthcare-local"


async def test_temporal_client_takes_tls_and_api_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Temporal Cloud: an API key turns TLS on; a self-hosted cluster may ask for TLS alone."""
    from temporalio.client import Client
    from temporalio.service import TLSConfig

    from healthcare import clients

    seen: list[dict[str, object]] = []

    async def connect(target: str, **kwargs: object) -> str:
        seen.append({"target": target, **kwargs})
        return "client"

    monkeypatch.setattr(Client, "connect", connect)
    await clients.temporal_client(Settings(temporal_api_key="k-123", temporal_address="a.tmprl.cloud:7233"))
    await clients.temporal_client(Settings(temporal_tls=True))
    await clients.temporal_client(Settings())
    assert [(c["tls"], c["api_key"]) for c in seen] == [(True, "k-123"), (True, None), (False, None)]
    # mTLS to a self-hosted cluster: the CA, the client certificate and key are read from files.
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_bytes(f"PEM {path.name}".encode())
    mtls = Settings(
        temporal_tls_ca_file=ca,
        temporal_tls_cert_file=cert,
        temporal_tls_key_file=key,
        temporal_tls_server_name="frontend.temporal.svc",
    )
    await clients.temporal_client(mtls)
    tls = seen[-1]["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key, tls.domain) == (
        b"PEM ca.pem",
        b"PEM client.pem",
        b"PEM client.key",
        "frontend.temporal.svc",
    )
    assert seen[-1]["data_converter"].payload_codec is not None  # type: ignore[attr-defined]
