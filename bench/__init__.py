"""Benchmarks: `make bench` (CPU, the embedded default) and gpu_qlora.py (a LLaVA-1.5-7B-shaped model)."""
