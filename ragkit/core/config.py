"""Settings from the environment and `.env`, validated once; `get_settings()` caches them.

Variable names follow DESIGN.md §3 (some are the upstream tools' own names, such as
`OLLAMA_HOST` and `QDRANT_URL`, so an existing environment just works).
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragkit.core.types import MAX_TOP_K

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
MIN_SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh service secret: 32 random bytes as 64 hex characters."""
    return secrets.token_hex(MIN_SECRET_BYTES)


def _env(name: str, default: object = None, **kwargs: object) -> object:
    return Field(default, validation_alias=name, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    inter_service_secret: str = _env("INTER_SERVICE_SECRET", "")
    data_dir: Path = _env("RAGKIT_DATA_DIR", DEFAULT_DATA_DIR)
    # Disk the embedded store leaves free beyond what each write is estimated to need
    # (ragkit.adapters.stores.edge_disk explains the estimates and this default).
    min_free_mb: int = _env("RAGKIT_MIN_FREE_MB", 64, ge=0)
    api_url: str = _env("RAGKIT_API_URL", DEFAULT_API_URL)
    ui_port: int = _env("RAGKIT_UI_PORT", 8501)

    embedder: Literal["local", "ollama", "openai"] | None = _env("RAGKIT_EMBEDDER")
    generator: Literal["extractive", "ollama", "openai"] | None = _env("RAGKIT_GENERATOR")
    # The local model runs on ONNX Runtime (exported from the shipped weights at first use, into
    # model_cache_dir) or on torch through sentence-transformers; both give the same vectors.
    local_backend: Literal["onnx", "torch"] = _env("RAGKIT_LOCAL_BACKEND", "onnx")
    model_dir: Path | None = _env("RAGKIT_MODEL_DIR")
    # ONNX Runtime: model calls at once, one core each (default: the cores this process may use).
    embed_workers: int | None = _env("RAGKIT_EMBED_WORKERS", None, ge=1, le=64)
    torch_threads: int = _env("RAGKIT_TORCH_THREADS", 2, ge=1, le=64)
    embed_batch_size: int = _env("RAGKIT_EMBED_BATCH_SIZE", 64, ge=1, le=4096)

    ollama_host: str | None = _env("OLLAMA_HOST")
    ollama_embed_model: str = _env("OLLAMA_EMBED_MODEL", "nomic-embed-text")
    ollama_chat_model: str = _env("OLLAMA_CHAT_MODEL", "llama3.2")
    ollama_timeout_s: float = _env("RAGKIT_OLLAMA_TIMEOUT", 60.0, gt=0)

    # Any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, TEI, hosted APIs), chosen only by
    # RAGKIT_EMBEDDER / RAGKIT_GENERATOR=openai; the names are the openai client's own. No model
    # has a default: each server names its models its own way. The key is a SecretStr, so no
    # repr or dump of the settings shows it.
    openai_base_url: str | None = _env("OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = _env("OPENAI_API_KEY")
    openai_model: str | None = _env("OPENAI_MODEL")
    openai_embed_model: str | None = _env("OPENAI_EMBED_MODEL")
    openai_timeout_s: float = _env("RAGKIT_OPENAI_TIMEOUT", 60.0, gt=0)
    # With an LLM generator, a follow-up is condensed into a standalone question by the model before
    # retrieval: short, since the search waits for it; past it the deterministic rewrite is searched.
    condense_timeout_s: float = _env("RAGKIT_CONDENSE_TIMEOUT", 5.0, gt=0)
    # Inputs per embeddings request: Text Embeddings Inference refuses more than 32 by default.
    openai_embed_batch_size: int = _env("RAGKIT_OPENAI_EMBED_BATCH_SIZE", 32, ge=1, le=2048)

    qdrant_url: str | None = _env("QDRANT_URL")
    qdrant_api_key: str | None = _env("QDRANT_API_KEY")
    qdrant_timeout_s: float = _env("RAGKIT_QDRANT_TIMEOUT", 10.0, gt=0)
    qdrant_shard_number: int | None = _env("RAGKIT_QDRANT_SHARDS", None, ge=1)
    qdrant_replication_factor: int | None = _env("RAGKIT_QDRANT_REPLICATION", None, ge=1)
    qdrant_write_consistency: int | None = _env("RAGKIT_QDRANT_WRITE_CONSISTENCY", None, ge=1)

    redis_url: str | None = _env("REDIS_URL")
    redis_timeout_s: float = _env("RAGKIT_REDIS_TIMEOUT", 1.0, gt=0)
    # Where ingestion jobs are chunked and embedded: in the service ("local"), or by `ragkit
    # worker` processes taking batches from REDIS_URL ("redis"); the service writes either way.
    job_queue: Literal["local", "redis"] = _env("RAGKIT_JOB_QUEUE", "local")
    cache_ttl_s: float = _env("RAGKIT_CACHE_TTL", 300.0, ge=0)

    rate_limit: str | None = _env("RAGKIT_RATE_LIMIT")
    service_rate_limit: str | None = _env("RAGKIT_SERVICE_RATE_LIMIT")
    jwt_secret: str | None = _env("RAGKIT_JWT_SECRET")
    jwt_public_key: str | None = _env("RAGKIT_JWT_PUBLIC_KEY")
    jwt_audience: str | None = _env("RAGKIT_JWT_AUDIENCE")
    jwt_issuer: str | None = _env("RAGKIT_JWT_ISSUER")
    # Comma lists. Proxies (IPs or CIDRs) whose X-Forwarded-For is believed; origins
    # (scheme://host[:port]) whose pages may call the API from a browser. Both empty by default.
    trusted_proxies: str = _env("RAGKIT_TRUSTED_PROXIES", "")
    cors_origins: str = _env("RAGKIT_CORS_ORIGINS", "")

    breaker_fail_max: int = _env("RAGKIT_BREAKER_FAIL_MAX", 5, ge=1)
    breaker_reset_s: float = _env("RAGKIT_BREAKER_RESET", 30.0, gt=0)

    chunk_size: int = _env("RAGKIT_CHUNK_SIZE", 200, ge=16, le=8192)
    chunk_overlap: int = _env("RAGKIT_CHUNK_OVERLAP", 30, ge=0)
    max_request_bytes: int = _env("RAGKIT_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, ge=1024)
    max_documents_per_request: int = _env("RAGKIT_MAX_DOCUMENTS", 2000, ge=1)
    # Folders on the service's machine a job may read (`{"path": ...}`), comma-separated; none by default.
    ingest_roots: str = _env("RAGKIT_INGEST_ROOTS", "")
    max_job_documents: int = _env("RAGKIT_MAX_JOB_DOCUMENTS", 100_000, ge=1)
    max_query_chars: int = _env("RAGKIT_MAX_QUERY_CHARS", 4000, ge=1)
    max_top_k: int = _env("RAGKIT_MAX_TOP_K", MAX_TOP_K, ge=1, le=MAX_TOP_K)
    optimize_after_ingest: bool = _env("RAGKIT_OPTIMIZE_AFTER_INGEST", True)
    # The index build after an ingestion waits for this long without searches, but no longer than
    # the second: Qdrant Edge's optimize() stalls every request while it runs (rag/optimizer.py).
    optimize_quiet_s: float = _env("RAGKIT_OPTIMIZE_QUIET_S", 1.0, ge=0)
    optimize_max_defer_s: float = _env("RAGKIT_OPTIMIZE_MAX_DEFER_S", 300.0, ge=0)

    @field_validator(
        "ollama_host",
        "qdrant_url",
        "redis_url",
        "openai_base_url",
        "openai_api_key",
        "openai_model",
        "openai_embed_model",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def service_secrets(self) -> list[bytes]:
        """All accepted service tokens: one normally, several while a secret is rotated."""
        return [s.strip().encode() for s in self.inter_service_secret.split(",") if s.strip()]

    @property
    def ingest_root_paths(self) -> list[Path]:
        return [Path(part.strip()).expanduser().resolve() for part in self.ingest_roots.split(",") if part.strip()]

    @property
    def ollama_urls(self) -> list[str]:
        """Where Ollama is asked: the hosts OLLAMA_HOST lists (comma-separated), else Ollama's own
        default address."""
        hosts = [part.strip().rstrip("/") for part in (self.ollama_host or "").replace(",", " ").split()]
        return list(dict.fromkeys(host for host in hosts if host)) or ["http://127.0.0.1:11434"]

    @property
    def openai_key(self) -> str | None:
        """The OpenAI-compatible server's API key, in the clear: for the client only, never a message."""
        return self.openai_api_key.get_secret_value() if self.openai_api_key else None

    @property
    def model_cache_dir(self) -> Path:
        """Where derived model files (the ONNX export) are kept: RAGKIT_MODEL_DIR, else <data_dir>/models."""
        return self.model_dir or self.data_dir / "models"

    @property
    def embedder_kind(self) -> str:
        return self.embedder or ("ollama" if self.ollama_host else "local")

    @property
    def generator_kind(self) -> str:
        return self.generator or ("ollama" if self.ollama_host else "extractive")


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
