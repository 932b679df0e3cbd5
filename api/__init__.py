"""FastAPI app: REST under /api/v1, health at the root; starts workflows. Imports services/ and the base."""
