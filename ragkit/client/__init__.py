"""HTTP client of the ragkit service, used by the CLI, the UI, the notebooks and load tests:
`base.py` (the plumbing, every route but the jobs', the ingestion driver), `jobs.py` (the
ingestion-job routes), `transfer.py` (a collection exported to a file and imported from one, streamed)."""

from ragkit.client.base import RagkitClient, resolve_connection
from ragkit.client.ingestion import DEFAULT_BATCH_DOCUMENTS, IngestSummary

__all__ = ["DEFAULT_BATCH_DOCUMENTS", "IngestSummary", "RagkitClient", "resolve_connection"]
