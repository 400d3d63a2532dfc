"""The MLflow registry: tracking setup, and the lineage tags that tie a version to its data and code."""
