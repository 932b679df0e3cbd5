"""Shared domain code for every role: settings, table models, event schemas, clients, logging, CLI."""
