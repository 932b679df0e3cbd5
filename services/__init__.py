"""Use cases behind HTTP and the CLI (authorization, audit, Temporal calls); may import base and workflows."""
