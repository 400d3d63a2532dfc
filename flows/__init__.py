"""Prefect flows that orchestrate the DVC stages (see issue 4)."""
