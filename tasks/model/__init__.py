"""The model side: loading a base (4-bit or not), LoRA, the prompt format, training batches."""
