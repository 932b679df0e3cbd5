"""Temporal activities: every side effect a workflow needs (database, Kafka, Lambda, storage), idempotent."""
