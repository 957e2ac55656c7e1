"""`ragkit loadtest`: load-test a running service with locust and pass or fail on latency budgets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ragkit.core.errors import InvalidInput, RagkitError, ServiceError


def _preflight(api_url: str, token: str, collection: str | None) -> None:
    """Fail in a second with a clear message, rather than after a minute of failed requests."""
    from ragkit.client import RagkitClient

    with RagkitClient(api_url, token, timeout=30) as client:
        client.health()
        collections = client.collections()  # also proves the token
    if collection is not None:
        if not any(c["name"] == collection for c in collections):
            raise click.ClickException(f"the service has no collection '{collection}'")
    elif not any(c["chunks"] > 0 for c in collections):
        raise click.ClickException("the service has no collection with chunks; ingest one first (ragkit ingest)")


@click.command("loadtest")
@click.option("--host", "api_url", help="Service URL (default: RAGKIT_API_URL or http://127.0.0.1:8000).")
@click.option("-u", "--users", default=50, show_default=True, type=int, help="Concurrent users.")
@click.option("-r", "--spawn-rate", default=10.0, show_default=True, type=float, help="Users started per second.")
@click.option("-t", "--run-time", default="60s", show_default=True, help="How long to run (e.g. 60s, 2m).")
@click.option("-c", "--collection", help="Collection to read (default: the one with the most chunks).")
@click.option("--queries", type=click.Path(dir_okay=False, path_type=Path),
              help="Query file: BEIR queries.jsonl or one query per line (default: SciFact's).")
@click.option("--scenario", type=click.Choice(["read", "ingest"]), default="read", show_default=True,
              help="ingest: one more user keeps ingesting into a scratch collection while the others read.")
@click.option("--mix", help="Task weights, e.g. 'search:hybrid=6,search:dense=3,ask=2,health=1'.")
@click.option("--think-time", help="Seconds each user waits between requests, 'MIN,MAX' (default 0.5,1.5).")
@click.option("--budget", "budgets", multiple=True, metavar="ROUTE=MS",
              help="P95 budget of a route or family (search, search:dense, ask, ...); repeatable.")
@click.option("--default-budget", default=500.0, show_default=True, type=float,
              help="P95 budget in ms of every route without its own (ingest is not gated unless named).")
@click.option("--max-failures", default=1.0, show_default=True, type=click.FloatRange(0, 100),
              help="Percentage of failed requests allowed.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Reports go to DATA_DIR/runs/loadtest-<time>/ (default: RAGKIT_DATA_DIR).")
@click.option("--log-requests", is_flag=True, help="Also write one JSON line per request (requests.jsonl).")
def loadtest(
    api_url: str | None,
    users: int,
    spawn_rate: float,
    run_time: str,
    collection: str | None,
    queries: Path | None,
    scenario: str,
    mix: str | None,
    think_time: str | None,
    budgets: tuple[str, ...],
    default_budget: float,
    max_failures: float,
    data_dir: Path | None,
    log_requests: bool,
) -> None:
    """Load-test the running service with locust (headless) and gate on P95 budgets.

    Writes CSV and HTML reports under DATA_DIR/runs/loadtest-<time>/, prints
    `p50=… p95=… p99=… rps=… failures=…` and exits 1 when a route's P95 is over its budget or
    more than --max-failures percent of requests failed. The token is INTER_SERVICE_SECRET.

    Example: ragkit loadtest -u 50 -t 60s --budget search=50
    """
    from ragkit.client import resolve_connection
    from ragkit.core.config import Settings
    from ragkit.workbench import loadtest as lt

    try:
        parsed = dict(lt.parse_budget(b) for b in budgets)
        if default_budget <= 0:
            raise InvalidInput(f"--default-budget must be positive, got {default_budget}")
        url, token = resolve_connection(api_url)
        config = lt.LoadTestConfig(
            host=url, users=users, spawn_rate=spawn_rate, run_time=run_time, collection=collection,
            queries=queries, scenario=scenario, mix=mix, think_time=think_time,
        )
        config.check()
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from exc
    if not token:
        raise click.UsageError("no service token: set INTER_SERVICE_SECRET (or put it in .env)")
    try:
        _preflight(url, token, collection)
    except ServiceError as exc:
        hint = " (check INTER_SERVICE_SECRET)" if exc.status == 401 else ""
        raise click.ClickException(f"the service answered {exc.status} {exc.code}: {exc.message}{hint}") from exc
    except RagkitError as exc:
        raise click.ClickException(exc.message) from exc

    run_dir = lt.new_run_dir(data_dir or Settings().data_dir)
    if log_requests:
        config.request_log = run_dir / "requests.jsonl"
    config.extra_env = {"INTER_SERVICE_SECRET": token}
    click.echo(f"load test: {users} users (+{spawn_rate:g}/s) for {run_time} against {url}; reports in {run_dir}",
               err=True)
    result = lt.run_locust(config, run_dir, service_pid=lt.listening_pid(url))
    if result.total is None:
        tail = (run_dir / "locust.log").read_text(errors="replace")[-2000:]
        raise click.ClickException(f"locust produced no statistics (exit code {result.exit_code}):\n{tail}")
    verdicts = lt.evaluate(result.stats, parsed, default_ms=default_budget, max_failure_ratio=max_failures / 100)
    lt.write_summary(run_dir, lt.result_summary(result, verdicts, config))
    _print_report(result, verdicts, parsed, default_budget)
    click.echo(lt.summary_line(result.total))
    if not all(v.passed for v in verdicts):
        sys.exit(1)


def _print_report(result, verdicts, budgets, default_budget: float) -> None:  # noqa: ANN001
    from ragkit.workbench import loadtest as lt

    click.echo(f"{'route':<16}{'requests':>9}{'failed':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'budget':>8}")
    for row in result.routes:
        limit = lt.budget_for(row.name, budgets, default_budget)
        shown = f"{limit:.0f}" if limit is not None else "-"
        click.echo(f"{row.name:<16}{row.requests:>9}{row.failures:>8}{row.p50_ms:>8.0f}{row.p95_ms:>8.0f}"
                   f"{row.p99_ms:>8.0f}{shown:>8}")
    cpu = result.locust_cpu
    line = (f"locust used {cpu.seconds:.1f} CPU-s in {cpu.wall_s:.0f} s = "
            f"{cpu.share_of_machine:.0%} of {cpu.cores} cores")
    if result.service_cpu is not None:
        line += f"; the service {result.service_cpu.share_of_machine:.0%}"
    click.echo(line)
    click.echo(f"machine load average (1 min): {result.load_before:.2f} before, {result.load_after:.2f} after")
    for verdict in verdicts:
        if not verdict.passed:
            click.secho("FAIL " + verdict.describe(), fg="red")
    click.echo(f"reports: {result.run_dir}")
