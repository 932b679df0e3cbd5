"""HTTP routers, one module per resource, thin over services/ (never activities/, workers/, ops/)."""
