"""Command-line entry points of the runtime (one module per command)."""
