"""Stages plan and execute: which analyses are stale, and running them here or on a Dask cluster."""
