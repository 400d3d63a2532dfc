"""Scoring answers against targets: Donut's TED accuracy and field F1, and the review page."""
