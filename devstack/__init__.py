"""Local-stack tooling: installs, starts, supervises, stops every component on 127.0.0.1. Imports anything."""
