"""Import every command module once, so each registers its commands on the app."""

from edge.cli import ask, bench, doctor, embeddings, export_cmd, inspect, models, serve, text  # noqa: F401
