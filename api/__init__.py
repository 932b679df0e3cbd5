"""FastAPI apps: the REST API (under /api/v1, health at the root; starts workflows) and the Temporal UI's
codec server. Import services/ and the base."""
