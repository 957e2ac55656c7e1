"""Ingestion jobs, kept in SQLite in the data directory: each job and each of its documents with
its outcome. It is the job's memory across restarts: a service killed mid-job finds the job
still `running`, puts it back in the queue and goes on from its first pending document (what it
had written but not yet recorded is skipped by its content hash). No server is needed.

Several service processes may share one journal (`ragkit serve --workers N`, with a Qdrant
server): each job is claimed by one of them, which holds it with a lease it renews while it runs
(`LEASE_S`). A job whose owner died is taken again: at once when the owner was a process on this
machine that no longer exists, else when its lease runs out.

Documents are stored as submitted until their job ends, so nothing is lost between the 202 and
the ingestion; a finished job's texts are dropped and only its outcomes are kept.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.core.errors import JobFinished, JobNotFound
from ragkit.core.types import Document, document_from_dict, document_to_dict

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
JOB_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = frozenset({DONE, FAILED, CANCELLED})
# A document's outcome in its job.
PENDING, INGESTED, SKIPPED, DOCUMENT_FAILED = "pending", "ingested", "skipped", "failed"
ERRORS_SHOWN = 100  # per-document errors a job's status lists (all are counted)
# How long a claimed job stays its owner's without a renewal (the runner renews it every third).
LEASE_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, collection TEXT NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0, error TEXT, waiting TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    documents_per_s REAL NOT NULL DEFAULT 0, chunks_per_s REAL NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '', lease_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_documents (
    job_id TEXT NOT NULL REFERENCES jobs(id), seq INTEGER NOT NULL, doc_id TEXT NOT NULL,
    body TEXT, state TEXT NOT NULL, error TEXT, PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS job_documents_state ON job_documents (job_id, state, seq);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
"""
# Added after the first journals were written; such a journal gets them at open.
LATER_COLUMNS = {"owner": "TEXT NOT NULL DEFAULT ''", "lease_until": "REAL NOT NULL DEFAULT 0"}
JOB_COLUMNS = (
    "id, collection, state, created_at, started_at, finished_at, updated_at, chunks, error, waiting,"
    " cancel_requested, documents_per_s, chunks_per_s"
)


def process_owner() -> str:
    """This process, as a job's owner: its machine and process id (and a nonce: pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_gone(owner: str) -> bool:
    """True when the owner was a process on this machine that no longer runs (or is unknown)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if not owner or not pid.isdigit():
        return True
    if host != socket.gethostname():
        return False  # another machine's: only its lease tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


@dataclass(frozen=True)
class Outcome:
    """What became of one document of a job."""

    seq: int
    state: str  # INGESTED, SKIPPED or DOCUMENT_FAILED
    error: str | None = None


@dataclass(frozen=True)
class Job:
    id: str
    collection: str
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    counts: dict[str, int]  # documents by outcome: pending, ingested, skipped, failed
    chunks: int
    error: str | None  # why the whole job failed
    waiting: str  # why a running job is waiting (a dependency is down), "" when it is not
    cancel_requested: bool
    documents_per_s: float
    chunks_per_s: float
    errors: tuple[tuple[str, str], ...]  # (doc_id, reason) of failed documents, the first ERRORS_SHOWN

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def eta_s(self) -> float | None:
        pending = self.counts.get(PENDING, 0)
        if self.state != RUNNING or self.documents_per_s <= 0:
            return None
        return pending / self.documents_per_s

    def as_dict(self) -> dict[str, Any]:
        done = self.total - self.counts.get(PENDING, 0)
        return {
            "id": self.id,
            "collection": self.collection,
            "state": self.state,
            "documents": {"total": self.total, "done": done, **self.counts},
            "chunks": self.chunks,
            "documents_per_s": round(self.documents_per_s, 3),
            "chunks_per_s": round(self.chunks_per_s, 3),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "error": self.error,
            "waiting": self.waiting or None,
            "cancel_requested": self.cancel_requested,
            "errors": [{"doc_id": doc_id, "reason": reason} for doc_id, reason in self.errors],
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"


class JobJournal:
    """The jobs of one service. Thread-safe; each call is one short transaction (call it from a
    worker thread in async code)."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        *,
        owner: str | None = None,
        lease_s: float = LEASE_S,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.owner = owner or process_owner()
        self.lease_s = lease_s
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; survives a killed process
        self._db.executescript(SCHEMA)
        with self._transaction() as db:
            present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for column, definition in LATER_COLUMNS.items():
                if column not in present:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- submitting and reading ---------------------------------------------------------------
    def submit(self, collection: str, documents: Sequence[Document], failures: Sequence[tuple[str, str]] = ()) -> Job:
        """A new queued job; ``failures`` are inputs already known to be unreadable (doc id or
        file name, reason), recorded as failed documents of the job."""
        job_id = uuid.uuid4().hex
        now = self._clock()
        rows = [(job_id, seq, d.id, json.dumps(document_to_dict(d)), PENDING, None) for seq, d in enumerate(documents)]
        rows += [
            (job_id, len(documents) + i, name, None, DOCUMENT_FAILED, reason)
            for i, (name, reason) in enumerate(failures)
        ]
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, collection, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, collection, QUEUED, now, now),
            )
            db.executemany("INSERT INTO job_documents VALUES (?, ?, ?, ?, ?, ?)", rows)
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            return self._job(row)

    def list(self, collection: str | None = None, limit: int = 50) -> list[Job]:
        """The newest jobs first."""
        query, args = f"SELECT {JOB_COLUMNS} FROM jobs", ()
        if collection is not None:
            query, args = query + " WHERE collection = ?", (collection,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
            return [self._job(row) for row in rows]

    def _job(self, row: tuple) -> Job:
        (job_id, collection, state, created, started, finished, updated, chunks, error, waiting, cancel, dps, cps) = row
        counts = dict.fromkeys((PENDING, INGESTED, SKIPPED, DOCUMENT_FAILED), 0)
        counted = "SELECT state, COUNT(*) FROM job_documents WHERE job_id = ? GROUP BY state"
        counts.update(self._db.execute(counted, (job_id,)).fetchall())
        errors = self._db.execute(
            "SELECT doc_id, error FROM job_documents WHERE job_id = ? AND state = ? ORDER BY seq LIMIT ?",
            (job_id, DOCUMENT_FAILED, ERRORS_SHOWN),
        ).fetchall()
        return Job(
            job_id, collection, state, created, started, finished, updated, counts, chunks, error, waiting,
            bool(cancel), dps, cps, tuple(errors),
        )  # fmt: skip

    # -- the runner's side --------------------------------------------------------------------
    def requeue_interrupted(self) -> int:
        """Jobs left `running` by a process that died go back to the queue (at start-up, and
        whenever the runner is idle): a process of this machine that no longer exists, at once;
        any other owner once its lease has run out."""
        now = self._clock()
        with self._transaction() as db:
            running = db.execute("SELECT id, owner, lease_until FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
            orphans = [
                (job_id,)
                for job_id, owner, lease_until in running
                if owner != self.owner and (lease_until < now or _owner_is_gone(owner))
            ]
            db.executemany(
                "UPDATE jobs SET state = ?, waiting = '', owner = '', lease_until = 0 WHERE id = ?",
                [(QUEUED, *orphan) for orphan in orphans],
            )
        return len(orphans)

    def next_job(self) -> Job | None:
        """Claim the oldest job of this process's that is running (resumed first), else the oldest
        queued one nobody holds; None when there is none."""
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE (state = ? AND owner = ?)"
                " OR (state = ? AND (owner IN ('', ?) OR lease_until < ?))"
                " ORDER BY state = ? DESC, created_at LIMIT 1",
                (RUNNING, self.owner, QUEUED, self.owner, now, RUNNING),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ?", (self.owner, now + self.lease_s, row[0])
            )
        return self.get(row[0])

    def renew(self, job_id: str) -> bool:
        """Extend this process's lease on a job; False when the job is no longer its own."""
        with self._transaction() as db:
            return (
                db.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND owner = ?",
                    (self._clock() + self.lease_s, job_id, self.owner),
                ).rowcount
                == 1
            )

    def counts(self) -> dict[str, int]:
        """Jobs by state (states without any are left out)."""
        with self._lock:
            return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def cancel_requested(self, job_id: str) -> bool:
        """Asked between batches: one column, not the whole status with its counts."""
        with self._lock:
            row = self._db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def start(self, job_id: str) -> bool:
        """False when the job was cancelled (or finished, or claimed by another) since it was picked."""
        now = self._clock()
        with self._transaction() as db:
            return (
                db.execute(
                    "UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?), updated_at = ?"
                    " WHERE id = ? AND owner = ? AND state IN (?, ?)",
                    (RUNNING, now, now, job_id, self.owner, QUEUED, RUNNING),
                ).rowcount
                == 1
            )

    def pending(self, job_id: str, limit: int) -> list[tuple[int, Document]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM job_documents WHERE job_id = ? AND state = ? ORDER BY seq LIMIT ?",
                (job_id, PENDING, limit),
            ).fetchall()
        return [(seq, document_from_dict(json.loads(body))) for seq, body in rows]

    def record(self, job_id: str, outcomes: Sequence[Outcome], chunks: int, rates: tuple[float, float]) -> None:
        """Outcomes of a batch, its chunks written and the job's current rates, in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE job_documents SET state = ?, error = ?, body = NULL WHERE job_id = ? AND seq = ?",
                [(o.state, o.error, job_id, o.seq) for o in outcomes],
            )
            db.execute(
                "UPDATE jobs SET chunks = chunks + ?, documents_per_s = ?, chunks_per_s = ?, waiting = '',"
                " updated_at = ? WHERE id = ?",
                (chunks, *rates, self._clock(), job_id),
            )

    def wait_for(self, job_id: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET waiting = ?, updated_at = ? WHERE id = ?", (reason, self._clock(), job_id))

    def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        with self._transaction() as db:
            self._end(db, job_id, state, error)

    def _end(self, db: sqlite3.Connection, job_id: str, state: str, error: str | None) -> None:
        """A job's last state; its documents' texts are dropped (their outcomes stay)."""
        now = self._clock()
        db.execute(
            "UPDATE jobs SET state = ?, error = ?, waiting = '', finished_at = ?, updated_at = ? WHERE id = ?",
            (state, error, now, now, job_id),
        )
        db.execute("UPDATE job_documents SET body = NULL WHERE job_id = ?", (job_id,))

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one when its current batch is written
        (so no document is left half written)."""
        now = self._clock()
        with self._transaction() as db:
            job = self.get(job_id)
            if job.finished:
                raise JobFinished(job_id, job.state)
            if job.state == QUEUED:
                self._end(db, job_id, CANCELLED, None)
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
        return self.get(job_id)
