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
