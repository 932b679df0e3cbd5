"""Benchmarks printing figures and ratios against a baseline measured in the same run. Imports anything."""
