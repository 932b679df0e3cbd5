"""Domain errors. Services raise these; one handler in the API maps them to HTTP status codes."""

from __future__ import annotations


class DomainError(Exception):
    """Base class; `message` is safe to show to the caller (no internals, no other people's data)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it exists."""


class Conflict(DomainError):
    """The request clashes with the current state (duplicate, overlap, invalid transition)."""


class Forbidden(DomainError):
    """The caller is known but their role does not allow this action. The API audits every one,
    unless the service already did (`audited`)."""

    def __init__(self, message: str, *, audited: bool = False) -> None:
        super().__init__(message)
        self.audited = audited


class Unauthorized(DomainError):
    """No valid credentials."""


class Invalid(DomainError):
    """Well-formed input that breaks a business rule."""


class Unprocessable(DomainError):
    """Well-formed but unusable as sent (e.g. an Idempotency-Key reused for a different request)."""


class RateLimited(DomainError):
    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class IntegrityFailure(DomainError):
    """Something we stored is not what we stored (a checksum mismatch): never served, always audited."""


class DependencyUnavailable(DomainError):
    """A backing service (database, Temporal, Kafka, storage) did not answer in time, or this process
    is at capacity: the caller may retry after `retry_after_seconds`. `details` are extra fields
    of the answer (ids the caller can follow up with, never data)."""

    def __init__(
        self, message: str, *, retry_after_seconds: int = 1, details: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.details = details or {}
