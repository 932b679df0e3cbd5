"""FastAPI application: REST under /api/v1, health at the root; it starts workflows, never does their work."""
