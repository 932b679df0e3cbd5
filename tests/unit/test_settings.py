"""Settings: local defaults work with nothing set; production refuses default secrets."""

import pytest
from pydantic import ValidationError

from healthcare.settings import Settings


def test_local_defaults_need_no_environment() -> None:
    s = Settings()
    assert s.env == "local"
    assert s.database_url.startswith("postgresql+asyncpg://")
    assert s.database_url_sync.startswith("postgresql://")
    assert s.jwt_algorithm == "HS256"


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError) as err:
        Settings(env="production")
    assert "HC_JWT_SECRET" in str(err.value)
    assert "HC_AWS_SECRET_ACCESS_KEY" in str(err.value)


def test_production_refuses_short_jwt_secret() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(env="production", jwt_secret="short", aws_secret_access_key="real-secret")


def test_production_accepts_real_secrets() -> None:
    s = Settings(env="production", jwt_secret="x" * 40, aws_secret_access_key="real-secret")
    assert s.env == "production"


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
    s = Settings(env="production", jwt_secret="x" * 40, aws_access_key_id="")
    assert s.aws_access_key_id == ""
    with pytest.raises(ValidationError, match="HC_AWS_SECRET_ACCESS_KEY"):
        Settings(env="production", jwt_secret="x" * 40, aws_access_key_id="AKIAEXAMPLE")


def test_aws_clients_use_the_credential_chain_without_a_key_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from healthcare import clients

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-chain")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    chained = clients.s3_client(Settings(aws_access_key_id=""))
    assert chained._request_signer._credentials.access_key == "from-the-chain"
    static = clients.s3_client(Settings())
    assert static._request_signer._credentials.access_key == "healthcare-local"


async def test_temporal_client_takes_tls_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporal Cloud: an API key turns TLS on; a self-hosted cluster may ask for TLS alone."""
    from temporalio.client import Client

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
