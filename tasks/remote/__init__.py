"""The train stage on another host: handing the run over through git + the DVC remote, checkpoints."""
