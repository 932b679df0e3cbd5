"""Temporal activities: side effects of workflows (database, Lambda, storage), idempotent. Import the base."""
