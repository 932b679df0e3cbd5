"""The PyFlink analytics job. Imports the base; job.py and metrics.py nothing of ours (run on a cluster)."""
