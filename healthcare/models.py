"""Table models (SQLModel). Each entity's API-facing models live beside its router's service."""

from __future__ import annotations
