"""The one settings object: every process reads its configuration from the environment here."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from healthcare import profiles

REPO_ROOT = Path(__file__).resolve().parent.parent

# Local defaults. Safe only on 127.0.0.1; Settings refuses them when HC_ENV=production.
_DEV_JWT_SECRET = "local-dev-only-jwt-secret-change-me-0123456789"
_DEV_AWS_KEY = "healthcare-local"
_DEV_AWS_SECRET = "healthcare-local-secret"
# Payload encryption key (AES-256) of the local stack; its id marks payloads that only it wrote.
_DEV_PAYLOAD_KEY_ID = "local-dev-1"
_DEV_PAYLOAD_KEYS = f"{_DEV_PAYLOAD_KEY_ID}:vLrW91zrumsjl5BlKR6KFZ9MYOtrxTogPFAs06HAmCI="


class Settings(BaseSettings):
    """Configuration for every role (api, worker, consumer, relay, stack tooling)."""

    model_config = SettingsConfigDict(env_prefix="HC_", extra="ignore", frozen=True)

    env: Literal["local", "test", "production"] = "local"
    # Which local stack this process belongs to (healthcare/profiles.py): each has its own state
    # folder, ports (dev's + port_offset), database, namespace, topics and bucket.
    profile: profiles.Profile = "dev"
    port_offset: int = Field(default=0, ge=0, le=20000)
    state_dir: Path = REPO_ROOT / ".state"
    tools_dir: Path = REPO_ROOT / ".state" / "tools"  # built tools, shared by every profile
    log_level: str = "INFO"
    log_json: bool = True

    # PostgreSQL
    database_url: str = "postgresql+asyncpg://healthcare:healthcare@127.0.0.1:5432/healthcare"
    db_pool_size: int = 10

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "healthcare"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    # Run workflow code in the SDK's sandbox. The workflow and replay tests always use it (they are
    # where a non-deterministic change is caught); a production worker may turn it off, since it
    # re-imports and re-compiles the workflow module for every new run.
    temporal_workflow_sandbox: bool = True
    # Connection security for Temporal Cloud or a self-hosted cluster with mTLS. TLS is on when any
    # TLS file is given, when `temporal_tls` is set, or (the SDK's rule) when an API key is given.
    temporal_tls: bool = False
    temporal_tls_ca_file: Path | None = None  # server CA; unset = the system's trust store
    temporal_tls_cert_file: Path | None = None  # client certificate (mTLS)
    temporal_tls_key_file: Path | None = None  # its private key
    temporal_tls_server_name: str | None = None  # overrides the name checked in the server certificate
    temporal_api_key: SecretStr | None = None  # Temporal Cloud API key (sent as a bearer token)
    # Payload encryption (healthcare.codec): `id:base64key` pairs, comma-separated; every key
    # decrypts, the one named by `payload_key_id` encrypts. Rotate by adding a key, then switching.
    payload_keys: SecretStr = SecretStr(_DEV_PAYLOAD_KEYS)
    payload_key_id: str = _DEV_PAYLOAD_KEY_ID

    # Codec server for the Temporal UI (`healthcare serve codec`)
    codec_host: str = "127.0.0.1"
    codec_port: int = Field(default=8002, ge=1, le=65535)
    # Browser origins allowed to call it (CORS), comma-separated: the Temporal UI's. Empty = the
    # origin of temporal_ui_url.
    codec_cors_origins: str = ""
    # Its sign-in cookie: Secure (HTTPS only) by default in production; SameSite `none` only when the
    # UI is on another site (Temporal Cloud's UI), which also needs Secure.
    codec_cookie_secure: bool | None = None
    codec_cookie_samesite: Literal["lax", "strict", "none"] = "lax"

    # Prometheus metrics of the worker and consumer roles (the API serves /metrics itself); 0 = off
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)

    # Billing: days from issue to due date (then the invoice becomes OVERDUE)
    billing_payment_terms_days: int = Field(default=30, ge=1, le=365)

    # The analytics job (python -m analytics_flink run|submit; its flags win over these). The folders
    # default to <state_dir>/data/flink-checkpoints and <state_dir>/tools/flink-connectors; the
    # checkpoints may be a URL (s3://...) for a cluster.
    analytics_group_id: str = "healthcare-analytics-group"
    analytics_checkpoint_dir: str | None = None
    analytics_checkpoint_interval_ms: int = Field(default=5000, ge=100)
    analytics_rest_port: int = Field(default=8081, ge=1, le=65535)  # the local mini-cluster's REST API
    analytics_connector_dir: Path | None = None

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL", "SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    topic_appointment_events: str = "appointment-events"
    topic_analytics_results: str = "analytics-results"
    # Where the billing consumer parks the events it refuses for good; empty: "<events topic>-dlq".
    topic_appointment_events_dlq: str = ""
    # Failed sends of one outbox row before it is parked (kept and reported, no longer sent).
    outbox_max_attempts: int = Field(default=10, ge=1, le=1000)

    # AWS-compatible services (S3 storage, the invoice-PDF Lambda). An empty HC_AWS_ACCESS_KEY_ID
    # means the SDK's own credential chain (a workload role: IRSA, EKS Pod Identity, instance role).
    aws_region: str = "us-east-1"
    aws_access_key_id: str = _DEV_AWS_KEY
    aws_secret_access_key: SecretStr = SecretStr(_DEV_AWS_SECRET)
    s3_endpoint_url: str | None = "http://127.0.0.1:8333"
    s3_bucket: str = "invoices"
    lambda_endpoint_url: str | None = "http://127.0.0.1:8080"
    lambda_function_name: str = "function"

    # Auth
    jwt_secret: SecretStr = SecretStr(_DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "healthcare-api"
    jwt_audience: str = "healthcare-portal"
    jwt_ttl_seconds: int = 3600
    bcrypt_rounds: int = Field(default=12, ge=10, le=16)
    # Failed logins before a back-off lock: per account and per client address; counters reset
    # once no failure happened for `login_failure_window_seconds`.
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)

    # Patient records: PostgreSQL (default) or Amazon DynamoDB (table partition key `id`).
    patient_store: Literal["postgres", "dynamodb"] = "postgres"
    dynamodb_endpoint_url: str | None = None
    dynamodb_patients_table: str = "patients"

    # HTTP endpoints
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    ws_host: str = "127.0.0.1"
    ws_port: int = 8001

    # The clinic as the portal shows it: money in this ISO 4217 currency, times in this IANA zone.
    clinic_name: str = "Clinic"
    clinic_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    clinic_time_zone: str = "UTC"
    # The built portal the API serves at `/`, and the analytics websocket address browsers are
    # given (unset: the API's own host name with `ws_port`, right for the local stack).
    portal_dir: Path = REPO_ROOT / "portal" / "dist"
    public_ws_url: str | None = None

    # How long a readiness probe waits on one dependency.
    ready_timeout_seconds: float = 2.0

    # -- abuse and availability (README, Security) ----------------------------------------------
    # Addresses (or networks) of the reverse proxies in front of the API, comma-separated. Only a
    # connection from one of them may say, in X-Forwarded-For, whom it forwards; empty: nobody may.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    max_body_bytes: int = Field(default=65_536, ge=1024)  # request bodies above this answer 413
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)  # then 503: the pool is exhausted
    hash_queue_limit: int = Field(default=32, ge=1)  # bcrypt jobs waiting or running; then 503
    # Self-registrations per client address and in all, per window; then 429 with Retry-After.
    register_max_per_address: int = Field(default=5, ge=1)
    register_max_total: int = Field(default=200, ge=1)
    register_window_seconds: int = Field(default=600, ge=1)
    # After the per-account threshold, each further guess at an account waits its turn: turns are
    # spaced by 1, 2, 4 ... seconds, at most this; a guess whose turn is further off than
    # `login_max_wait_seconds` answers 429. Never a lockout: the right password gets in at its turn.
    login_max_spacing_seconds: int = Field(default=60, ge=1)
    login_max_wait_seconds: float = Field(default=5.0, ge=0)
    # How long booking, status changes and payment wait on Temporal before answering 503.
    temporal_update_timeout_seconds: float = Field(default=10.0, gt=0)
    ready_cache_seconds: float = Field(default=2.0, ge=0)  # /readyz answers from a cache this long
    # The websocket relay: where browsers may open it from (empty: the API's own origin), how many
    # sockets per account and in all, and how often an open socket's account is checked again.
    ws_allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    ws_max_connections_per_user: int = Field(default=5, ge=1)
    ws_max_connections: int = Field(default=1000, ge=1)
    ws_account_check_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "dev")
        if profile not in profiles.PORT_OFFSETS:
            return data  # the field's own validation names the bad value
        data.setdefault("port_offset", profiles.PORT_OFFSETS[profile])
        derived = profiles.defaults(profile, int(data["port_offset"]), REPO_ROOT)
        if profile == "dev" and "state_dir" in data:  # a dev stack elsewhere keeps its tools there
            derived["tools_dir"] = Path(data["state_dir"]) / "tools"
        return {**derived, **data}

    def stack_port(self, name: str) -> int:
        """A port of this profile's local stack by name (healthcare/profiles.py DEV_PORTS)."""
        return profiles.DEV_PORTS[name] + self.port_offset

    @field_validator("trusted_proxies", "ws_allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"HC_TRUSTED_PROXIES: {item!r} is not an IP address or network") from exc
        return value

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Origins a browser may open the relay from: the setting, or the API that serves the portal."""
        if self.ws_allowed_origins:
            return frozenset(o.rstrip("/") for o in self.ws_allowed_origins)
        hosts = {self.api_host} | ({"localhost"} if self.api_host == "127.0.0.1" else set())
        return frozenset(f"http://{host}:{self.api_port}" for host in hosts)

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.env != "production":
            return self
        defaults = {
            "HC_JWT_SECRET": self.jwt_secret.get_secret_value() == _DEV_JWT_SECRET,
            "HC_AWS_SECRET_ACCESS_KEY": bool(self.aws_access_key_id)
            and self.aws_secret_access_key.get_secret_value() == _DEV_AWS_SECRET,
            "HC_PAYLOAD_KEYS": _DEV_PAYLOAD_KEYS.split(":", 1)[1] in self.payload_keys.get_secret_value(),
        }
        bad = [name for name, is_default in defaults.items() if is_default]
        if bad:
            raise ValueError(f"refusing to start in production with default secrets: {bad}")
        if len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("HC_JWT_SECRET must be at least 32 characters in production")
        if not (self.temporal_tls_enabled or self.temporal_api_key):
            raise ValueError(
                "refusing to connect to Temporal in production without TLS or an API key: set "
                "HC_TEMPORAL_API_KEY (Temporal Cloud) or HC_TEMPORAL_TLS_CERT_FILE/KEY_FILE (mTLS)"
            )
        return self

    @field_validator("s3_endpoint_url", "lambda_endpoint_url", "dynamodb_endpoint_url", mode="before")
    @classmethod
    def _empty_endpoint_means_aws(cls, value: object) -> object:
        """`HC_S3_ENDPOINT_URL=` (empty) selects AWS's endpoint: an environment cannot unset a default."""
        return None if value == "" else value

    @field_validator("clinic_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        from healthcare.codec import Keyring

        try:
            Keyring.parse(self.payload_keys.get_secret_value(), self.payload_key_id)
        except ValueError as exc:
            raise ValueError(f"HC_PAYLOAD_KEYS / HC_PAYLOAD_KEY_ID: {exc}") from None
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ValueError("HC_TEMPORAL_TLS_CERT_FILE and HC_TEMPORAL_TLS_KEY_FILE go together (mTLS)")
        if self.codec_cookie_samesite == "none" and not self.codec_cookie_is_secure:
            raise ValueError("HC_CODEC_COOKIE_SAMESITE=none needs HC_CODEC_COOKIE_SECURE=true (HTTPS)")
        return self

    @property
    def temporal_tls_enabled(self) -> bool:
        files = (self.temporal_tls_ca_file, self.temporal_tls_cert_file, self.temporal_tls_key_file)
        return self.temporal_tls or any(f is not None for f in files)

    @property
    def codec_origins(self) -> list[str]:
        given = [o.strip().rstrip("/") for o in self.codec_cors_origins.split(",") if o.strip()]
        if given:
            return given
        ui = urlsplit(self.temporal_ui_url)
        return [f"{ui.scheme}://{ui.netloc}"]

    @property
    def codec_cookie_is_secure(self) -> bool:
        return self.env == "production" if self.codec_cookie_secure is None else self.codec_cookie_secure

    @property
    def appointment_events_dlq(self) -> str:
        """The dead-letter topic of `appointment-events` (HC_TOPIC_APPOINTMENT_EVENTS_DLQ)."""
        return self.topic_appointment_events_dlq or f"{self.topic_appointment_events}-dlq"

    @property
    def database_url_sync(self) -> str:
        """The same database for tools that speak libpq-style URLs (asyncpg.connect, psql)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
