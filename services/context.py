"""Who is acting, from where: passed to every service call that touches protected data."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from healthcare.models import Role


@dataclass(frozen=True)
class Actor:
    user_id: uuid.UUID
    role: Role
    email: str

    @property
    def is_clinic_wide(self) -> bool:
        """Admins and staff see every patient, appointment and invoice."""
        return self.role in (Role.admin, Role.staff)


@dataclass(frozen=True)
class RequestContext:
    actor: Actor | None
    client_ip: str | None
    request_id: str | None
    # The key audit records of this request are chained with (HC_AUDIT_HMAC_KEY).
    audit_key: bytes = field(repr=False, kw_only=True)


def require_actor(ctx: RequestContext) -> Actor:
    """Services that touch protected data are only reachable through authenticated routes."""
    assert ctx.actor is not None, "this service needs an authenticated actor"
    return ctx.actor
