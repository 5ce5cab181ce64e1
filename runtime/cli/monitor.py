"""``coal-monitor CONFIG.toml``: process new scenes, update yearly areas, rebuild the reports.

Made for cron and systemd timers: it does nothing when nothing is new, prints one status
line on stderr, and its exit code says what happened:

====  ======================================================================
code  meaning
====  ======================================================================
0     every configured scene is processed (or unchanged); reports are fresh
1     a data problem: at least one scene failed (the others are done and the
      reports written), or the bundle/AOIs/scenes cannot be read
2     a usage problem: bad configuration (unknown key, missing file, bad value,
      a credential the [source] catalogue needs not set)
69    the [source] catalogue could not be reached: nothing new was fetched, the
      scenes already there are processed and the reports written
75    another coal-monitor run holds the output folder's lock; nothing done
      (EX_TEMPFAIL: the next timer run will simply try again)
130   interrupted (Ctrl-C); the next run resumes
====  ======================================================================
"""

from __future__ import annotations

import sys

import click

from .options import CONTEXT_SETTINGS, handle_errors, quiet_opt, setup_logging, verbose_opt

PROG = "coal-monitor"


def quiet_runner_logs(verbose: int) -> None:
    """Keep coal-run's per-scene details (backend choice, paths) for -v: the monitor logs one
    line per scene itself, which is what a timer's journal should show."""
    import logging

    if not verbose:
        logging.getLogger("coalmine.runtime.run").setLevel(logging.WARNING)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("config", type=click.Path(dir_okay=False, path_type=str))
@click.option("--retry-failed", is_flag=True, default=False,
              help="Retry failed scenes even when they used up max_attempts.")
@click.option("--dry-run", is_flag=True, default=False,
              help="Only list what would be processed and why; write no outputs.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Run the scenes as Dask tasks: a scheduler address (tcp://HOST:8786), a scheduler "
                   "JSON file, or local:N for N local worker processes. Default: [cluster] scheduler "
                   "in CONFIG, else one scene at a time in this process.")
@verbose_opt
@quiet_opt
@handle_errors(PROG)
def main(config: str, retry_failed: bool, dry_run: bool, scheduler: str | None, verbose: int, quiet: bool) -> None:
    """Monitor mined area over the scenes listed in CONFIG (a TOML file).

    Processes only scenes that are new or changed since the last run (the SQLite ledger in
    the output folder remembers), composes one mask per year, writes change maps between
    consecutive years and regenerates the CSV/PNG/HTML reports. With a [source] table it first
    fetches the new acquisitions over the AOIs from a STAC catalogue. Exit codes: 0 ok, 1 a scene
    or input failed, 2 bad configuration, 69 the catalogue could not be reached (what was there is
    mapped), 75 another run holds the lock.
    """
    setup_logging(verbose, quiet)
    quiet_runner_logs(verbose)
    from ..monitor import load_config, run_monitor
    from ..monitor.cluster import open_executor

    cfg = load_config(config)
    with open_executor(cfg, scheduler, dry_run=dry_run) as executor:
        summary = run_monitor(cfg, retry_failed=retry_failed, dry_run=dry_run, executor=executor)
    if dry_run:
        todo = sum(v for k, v in summary.reasons.items() if k not in ("unchanged", "failed earlier"))
        fetch = ""
        if summary.fetch is not None:
            n = sum(p.action == "fetch" for p in summary.fetch.planned)
            fetch = summary.fetch.unreachable or f"{n} acquisition(s) to fetch"
            fetch += "; then "
        click.echo(f"{PROG}: dry run: {fetch}{todo} scene(s) to process, {summary.unchanged} unchanged", err=True)
        sys.exit(0)
    for scene, err in summary.failures:
        click.echo(f"{PROG}: failed: {scene}: {err}", err=True)
    click.echo(f"{PROG}: {summary.status_line()}", err=True)
    sys.exit(summary.exit_code)
