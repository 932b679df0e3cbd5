"""Local-stack tooling: installs, starts, supervises and stops every real component on 127.0.0.1."""
