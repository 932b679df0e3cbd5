"""Operator tools and the `healthcare` console command; may import every floor below it (never api/)."""
