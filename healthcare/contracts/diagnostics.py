"""Diagnostics contracts: the end-to-end check's workflow and activity models."""

from __future__ import annotations

from pydantic import BaseModel


class DiagnosticsInput(BaseModel):
    probe: str


class DiagnosticsResult(BaseModel):
    probe: str
    server_version: str


class DatabaseCheckInput(BaseModel):
    probe: str


class DatabaseCheckResult(BaseModel):
    probe: str
    server_version: str
    workflow_id: str
