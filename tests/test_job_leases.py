"""Several service processes on one job journal (`ragkit serve --workers N`): each job is run by
one of them, a process starting does not take the jobs another one is running, and a job whose
owner died is taken over (at once when the owner was a process of this machine, else when its
lease runs out). Real SQLite files, a clock the test moves."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from ragkit.core.types import Document
from ragkit.rag.jobs import QUEUED, RUNNING, JobJournal, process_owner

DOCS = [Document(id=f"d{i}", text=f"document {i}") for i in range(3)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def dead_pid() -> int:
    """The id of a process of this machine that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def journals(path: Path, clock: Clock, *owners: str) -> list[JobJournal]:
    return [JobJournal(path, clock, owner=owner, lease_s=60.0) for owner in owners]


def test_a_job_is_claimed_by_one_process_and_another_starting_leaves_it_alone(tmp_path: Path) -> None:
    clock = Clock()
    a, b = journals(tmp_path / "jobs.sqlite3", clock, process_owner(), process_owner())
    job = a.submit("docs", DOCS)
    assert b.next_job() is not None  # b claims it first ...
    assert b.start(job.id)
    assert a.next_job() is None, "a job another live process holds is not claimed again"
    assert not a.start(job.id)
    # A third process starting up does not put b's running job back in the queue: b is alive.
    c = JobJournal(tmp_path / "jobs.sqlite3", clock, owner=process_owner())
    assert c.requeue_interrupted() == 0
    assert c.get(job.id).state == RUNNING
    # Two queued jobs, two processes: one each.
    second, third = a.submit("docs", DOCS), a.submit("docs", DOCS)
    claimed = {a.next_job().id, c.next_job().id}
    assert claimed == {second.id, third.id}


def test_a_dead_local_owner_is_taken_over_at_once_and_a_remote_one_when_its_lease_ends(tmp_path: Path) -> None:
    clock = Clock()
    host = socket.gethostname()
    path = tmp_path / "jobs.sqlite3"
    dead, remote, survivor = journals(path, clock, f"{host}:{dead_pid()}:0001", "elsewhere:42:0002", process_owner())
    gone = dead.submit("docs", DOCS)
    assert dead.next_job().id == gone.id and dead.start(gone.id)
    away = remote.submit("docs", DOCS)
    assert remote.next_job().id == away.id and remote.start(away.id)

    assert survivor.requeue_interrupted() == 1  # the dead process's job, at once
    assert survivor.get(gone.id).state == QUEUED
    assert survivor.get(away.id).state == RUNNING  # the other machine's may be alive: its lease holds
    assert survivor.next_job().id == gone.id

    clock.now += 30
    assert remote.renew(away.id)  # a live owner renews ...
    clock.now += 59
    assert survivor.requeue_interrupted() == 0
    clock.now += 2  # ... and one that stopped renewing loses the job
    assert survivor.requeue_interrupted() == 1
    assert survivor.get(away.id).state == QUEUED
    assert not remote.renew(away.id), "the old owner learns the job is no longer its own"
    assert not remote.start(away.id)


def test_a_journal_written_before_owners_existed_opens_and_resumes(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "jobs.sqlite3"
    old = JobJournal(path, Clock())
    job = old.submit("docs", DOCS)
    old.close()
    # The journal as the previous version wrote it: no owner or lease columns, a job left running.
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN owner")
    db.execute("ALTER TABLE jobs DROP COLUMN lease_until")
    db.execute("UPDATE jobs SET state = ?", (RUNNING,))
    db.commit()
    db.close()
    reopened = JobJournal(path, Clock())
    assert reopened.requeue_interrupted() == 1
    assert reopened.next_job().id == job.id and reopened.start(job.id)
    assert reopened.get(job.id).counts["pending"] == len(DOCS)
