"""ragkit: a self-hosted retrieval-augmented generation service and workbench."""

__version__ = "0.1.0"
