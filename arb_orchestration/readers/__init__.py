"""Readers that run in their own processes, beside Dagster's (nothing here imports Dagster)."""
