"""Decrypting and encrypting Temporal payloads for operators (the codec server's use case).

Staff and admins may: they read every patient record through the API anyway, so a decoded workflow
shows them nothing new. Doctors and patients see only their own records, and a workflow belongs to
anyone: they are refused. Every call, allowed or refused, is audited: one record per workflow whose
payloads were decoded (the codec writes the workflow id into each payload's metadata), or one for
the namespace when the payloads name none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.api.common.v1 import Payload

from healthcare import codec, errors
from healthcare.logging import get_logger
from healthcare.models import Role
from services import audit
from services.context import RequestContext, require_actor

log = get_logger(__name__)

OPERATOR_ROLES = (Role.admin, Role.staff)
Kind = Literal["decode", "encode"]


def may_decode(role: Role) -> bool:
    return role in OPERATOR_ROLES


def workflows_of(payloads: Sequence[Payload]) -> list[str]:
    """The workflow ids our codec wrote into these payloads (audit ids: at most 64 characters)."""
    return sorted(
        {
            p.metadata[codec.WORKFLOW_ID].decode(errors="replace")[:64]
            for p in payloads
            if codec.WORKFLOW_ID in p.metadata
        }
    )


async def convert(
    session: AsyncSession,
    ctx: RequestContext,
    *,
    keys: codec.EncryptionCodec,
    kind: Kind,
    payloads: Sequence[Payload],
    namespace: str | None,
) -> list[Payload]:
    actor = require_actor(ctx)
    namespace_id = (namespace or "")[:64] or None
    if not may_decode(actor.role):
        await audit.record(
            session, ctx, action=kind, resource_type="namespace", resource_id=namespace_id, outcome="denied"
        )
        raise errors.Forbidden("only staff and admins may decode workflow payloads")
    try:
        out = [keys.decrypt(p) if kind == "decode" else keys.encrypt(p) for p in payloads]
    except codec.CodecError as exc:
        raise errors.Unprocessable(str(exc)) from exc
    workflows = workflows_of(payloads)
    if workflows:
        await audit.record_many(session, ctx, action=kind, resource_type="workflow", resource_ids=workflows)
    else:
        await audit.record(session, ctx, action=kind, resource_type="namespace", resource_id=namespace_id)
    log.info(
        "payloads converted",
        kind=kind,
        namespace=namespace,
        payloads=len(out),
        workflows=workflows,
        actor_id=str(actor.user_id),
    )
    return out
