"""Developer tooling, not pipeline code: local service stacks for tests and laptops."""
