"""Operator tools and the `healthcare` console command. May import every floor but api/ (served by name)."""
