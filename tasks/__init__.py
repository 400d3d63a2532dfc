"""receipt-llava's step code. The top-level modules are the commands: the DVC stages (each a
thin CLI around its `run_<stage>` function) and the user's commands; the subpackages are the
layers they stand on (core < data < model | evaluation < registry | inference < remote |
reader), each importing only from those below it (pyproject.toml's import-linter contracts)."""
