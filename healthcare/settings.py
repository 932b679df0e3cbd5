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
from sqlalchemy.engine import make_url

from healthcare import profiles

REPO_ROOT = Path(__file__).resolve().parent.parent

# Local defaults. Safe only on 127.0.0.1; Settings refuses them when HC_ENV=production.
_DEV_JWT_SECRET = "local-dev-only-jwt-secret-change-me-0123456789"
_DEV_AWS_KEY = "healthcare-local"
_DEV_AWS_SECRET = "healthcare-local-secret"
# Payload encryption key (AES-256) of the local stack; its id marks payloads that only it wrote.
_DEV_PAYLOAD_KEY_ID = "local-dev-1"
_DEV_PAYLOAD_KEYS = f"{_DEV_PAYLOAD_KEY_ID}:vLrW91zrumsjl5BlKR6KFZ9MYOtrxTogPFAs06HAmCI="
_DEV_DB_PASSWORDS = frozenset({"healthcare", "healthcare_owner"})
_DEV_AUDIT_KEY = "local-dev-only-audit-hmac-key-change-me-0123456789"
_DEV_PAYMENT_API_KEY = "local-dev-only-payment-api-key"
_DEV_PAYMENT_WEBHOOK_SECRET = "local-dev-only-payment-webhook-secret-0123456789"
# The local stack's owner role (migrations); the app role is the one in HC_DATABASE_URL.
LOCAL_OWNER_ROLE = "healthcare_owner"
MIN_SECRET_LENGTH = 32


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
    # The role that owns the schema and runs migrations (`healthcare migrate`): the app role above
    # only reads and writes rows, and appends to the audit trail through its functions. Unset: the
    # local stack's owner role on the same server and database; in production HC_DATABASE_URL itself
    # (a migration Job given only the owner's URL), and then HC_DATABASE_APP_ROLE names the app role.
    database_owner_url: SecretStr | None = None
    # The role the application connects as, which migrations grant privileges to (default: the user
    # of HC_DATABASE_URL).
    database_app_role: str | None = None
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
    # Workflows a worker keeps in memory between their tasks (the SDK's sticky cache; its default is
    # 1,000). Every appointment and invoice keeps a workflow open for days, but each is busy only for
    # the seconds around a booking, a payment or a cancellation; an evicted one is replayed from its
    # short history on its next task. Each cached run holds its own copy of the workflow module
    # under the sandbox, so this bounds the worker's memory; see the README's scaling section.
    worker_max_cached_workflows: int = Field(default=256, ge=1)
    # Seconds between full garbage collections in the worker (0 = Python's own schedule). A run
    # evicted from the cache dies as an old object, which only a full collection frees, and under
    # the roles' thresholds (healthcare.process.tune_gc) a worker rarely reaches one: under a steady
    # booking load its memory grew by about 70 KB per booking for minutes at a time (bench/soak.py).
    worker_gc_interval_seconds: float = Field(default=60.0, ge=0)
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

    # Traces (healthcare/tracing.py): a Zipkin-compatible collector's span endpoint, e.g.
    # http://127.0.0.1:9411/api/v2/spans; empty = tracing off (no exporter, no interceptor). The
    # local stacks start Zipkin and set it for their processes. A trace is kept whole or not at all.
    tracing_endpoint: str = ""
    tracing_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

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
    jwt_ttl_seconds: int = Field(default=3600, ge=60)
    # No token is accepted once this old (from `iat`), whatever its `exp` says.
    jwt_max_age_seconds: int = Field(default=12 * 3600, ge=60, le=7 * 24 * 3600)
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

    # Business rules (README, "Security"): patients and doctors cancel only until this many hours
    # before the visit; they hold at most this many open future bookings per patient and book at
    # most `booking_rate_limit` times per `booking_rate_window_seconds` (staff and admins are exempt).
    cancel_cutoff_hours: int = Field(default=24, ge=0, le=24 * 30)
    booking_max_open_per_patient: int = Field(default=10, ge=1)
    booking_rate_limit: int = Field(default=20, ge=1)
    booking_rate_window_seconds: int = Field(default=3600, ge=1)

    # Payments: `local` is the provider the local stack runs (devstack/payment_provider.py); `none`
    # turns online payment off (desk payments only). Production refuses `local`.
    payment_provider: Literal["local", "none"] = "local"
    payment_provider_url: str = "http://127.0.0.1:8090"
    payment_provider_api_key: SecretStr = SecretStr(_DEV_PAYMENT_API_KEY)
    payment_webhook_secret: SecretStr = SecretStr(_DEV_PAYMENT_WEBHOOK_SECRET)
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=10, le=3600)
    # Where the provider sends the patient back after paying (the portal); unset: the API's own /.
    payment_return_url: str | None = None

    # The audit trail: records are chained with HMAC-SHA256 under this key (kept outside the
    # database); the worker writes the chain's head to object storage every interval (0 = never).
    audit_hmac_key: SecretStr = SecretStr(_DEV_AUDIT_KEY)
    audit_anchor_interval_seconds: int = Field(default=300, ge=0)
    audit_anchor_prefix: str = "audit-anchors/"

    @model_validator(mode="after")
    def _token_ttl_within_max_age(self) -> Settings:
        if self.jwt_ttl_seconds > self.jwt_max_age_seconds:
            raise ValueError("HC_JWT_TTL_SECONDS must not exceed HC_JWT_MAX_AGE_SECONDS")
        return self

    @model_validator(mode="after")
    def _refuse_local_defaults_in_production(self) -> Settings:
        if self.env != "production":
            return self
        problems = production_problems(self)
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
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

    @property
    def owner_database_url(self) -> str:
        """The URL migrations run with: HC_DATABASE_OWNER_URL; else in production HC_DATABASE_URL (a
        migration Job that holds only the owner's URL); else the owner role that the local stack
        creates beside the app role (same server, same database)."""
        if self.database_owner_url is not None:
            return self.database_owner_url.get_secret_value()
        if self.env == "production":
            return self.database_url
        url = make_url(self.database_url).set(username=LOCAL_OWNER_ROLE, password=LOCAL_OWNER_ROLE)
        return url.render_as_string(hide_password=False)

    @property
    def app_role(self) -> str:
        """The database role of every process but migrations: HC_DATABASE_APP_ROLE, else the user
        of HC_DATABASE_URL."""
        return self.database_app_role or make_url(self.database_url).username or ""

    @property
    def return_url(self) -> str:
        return self.payment_return_url or f"http://{self.api_host}:{self.api_port}/"


_TLS_MODES = frozenset({"require", "verify-ca", "verify-full"})
_PLAINTEXT_KAFKA = frozenset({"PLAINTEXT", "SASL_PLAINTEXT"})


def _database_problems(name: str, url_text: str) -> list[str]:
    url = make_url(url_text)
    problems = []
    if url.password is None or url.password in _DEV_DB_PASSWORDS:
        problems.append(f"{name} has no password or the local default one")
    if str(url.query.get("ssl", url.query.get("sslmode", ""))) not in _TLS_MODES:
        problems.append(f"{name} must ask for TLS (?ssl=verify-full, verify-ca or require)")
    return problems


def production_problems(s: Settings) -> list[str]:
    """Each local default or plaintext channel that production refuses, naming its setting."""
    problems = _database_problems("HC_DATABASE_URL", s.database_url)
    if s.database_owner_url is not None:
        problems += _database_problems("HC_DATABASE_OWNER_URL", s.database_owner_url.get_secret_value())
    secrets = {
        "HC_JWT_SECRET": (s.jwt_secret, _DEV_JWT_SECRET),
        # No key id: the SDK's credential chain (a workload role), and the secret is not used.
        **(
            {"HC_AWS_SECRET_ACCESS_KEY": (s.aws_secret_access_key, _DEV_AWS_SECRET)}
            if s.aws_access_key_id
            else {}
        ),
        "HC_AUDIT_HMAC_KEY": (s.audit_hmac_key, _DEV_AUDIT_KEY),
        # Online payment off: its secrets are not used.
        **(
            {
                "HC_PAYMENT_WEBHOOK_SECRET": (s.payment_webhook_secret, _DEV_PAYMENT_WEBHOOK_SECRET),
                "HC_PAYMENT_PROVIDER_API_KEY": (s.payment_provider_api_key, _DEV_PAYMENT_API_KEY),
            }
            if s.payment_provider != "none"
            else {}
        ),
    }
    for name, (value, default) in secrets.items():
        if value.get_secret_value() == default:
            problems.append(f"{name} has its local default")
    for name, value in (("HC_JWT_SECRET", s.jwt_secret), ("HC_AUDIT_HMAC_KEY", s.audit_hmac_key)):
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            problems.append(f"{name} must be at least {MIN_SECRET_LENGTH} characters")
    if s.kafka_security_protocol in _PLAINTEXT_KAFKA:
        problems.append(
            f"HC_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} is not encrypted (use SASL_SSL or SSL)"
        )
    endpoints = {
        "HC_S3_ENDPOINT_URL": s.s3_endpoint_url,
        "HC_LAMBDA_ENDPOINT_URL": s.lambda_endpoint_url,
        "HC_DYNAMODB_ENDPOINT_URL": s.dynamodb_endpoint_url,
    }
    for name, endpoint in endpoints.items():
        if endpoint is not None and not endpoint.lower().startswith("https://"):
            problems.append(f"{name} must be https:// (or unset for AWS)")
    if s.payment_provider == "local":
        problems.append("HC_PAYMENT_PROVIDER=local is the local stack's simulated provider (set none)")
    # The local payload key must not encrypt, nor stay as an old key that still decrypts.
    if _DEV_PAYLOAD_KEYS.split(":", 1)[1] in s.payload_keys.get_secret_value():
        problems.append("HC_PAYLOAD_KEYS holds the local stack's payload key")
    if not (s.temporal_tls_enabled or s.temporal_api_key):
        problems.append(
            "refusing to connect to Temporal without TLS or an API key: set HC_TEMPORAL_API_KEY "
            "(Temporal Cloud) or HC_TEMPORAL_TLS_CERT_FILE/KEY_FILE (mTLS)"
        )
    return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
