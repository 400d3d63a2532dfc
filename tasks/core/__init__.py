"""Shared by every layer: typed params (config), atomic writes (io), user errors, the CLI harness."""
