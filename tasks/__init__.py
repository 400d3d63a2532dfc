"""receipt-llava: the step code. One module per pipeline stage, each with a `run_<stage>` core function."""
