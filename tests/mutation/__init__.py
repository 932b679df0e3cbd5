"""Mutation testing of the core modules (`make mutation`): the runner and the equivalent-mutant list."""
