"""Import every command module once, so each registers its commands on the app."""

from edge.cli import bench, embeddings, export_cmd, text  # noqa: F401
from edge.cli import doctor  # noqa: F401
from edge.cli import inspect  # noqa: F401
