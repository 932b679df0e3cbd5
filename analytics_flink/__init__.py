"""The PyFlink job: appointment events in, analytics results out (arrives with the analytics issue)."""
