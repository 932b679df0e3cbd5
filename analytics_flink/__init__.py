"""The PyFlink analytics job: appointment events in, cumulative and hourly analytics results out."""
