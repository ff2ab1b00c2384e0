"""``birdassets query "SQL" [--format table|csv|json] [--limit N]``: read-only SQL on the metrics database.

ONE reading statement per call (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA, CALL), run on a
connection that cannot write the database or touch any other file
(:mod:`birdassets.store.reads`). Rows are printed as they are fetched, chunk by chunk, so memory
stays bounded whatever the result's size; at most ``--limit`` rows are printed (a line on stderr
says when the result had more). Everything refused is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_ROW_LIMIT = 10_000
"""Rows printed when ``--limit`` is not given."""


def row_limit(text: str) -> int:
    """``--limit``: a whole number >= 0 (0: no limit)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: all rows), got {text!r}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``query``."""
    query = commands.add_parser(
        "query", help="run read-only SQL on the metrics database", description=__doc__.split("\n\n")[1]
    )
    query.add_argument("sql", help="one reading statement, e.g. \"select * from leaderboard\"")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.add_argument(
        "--limit", type=row_limit, default=DEFAULT_ROW_LIMIT, metavar="N",
        help=f"print at most N rows (default {DEFAULT_ROW_LIMIT}; 0: all rows, streamed)",
    )
    query.set_defaults(func=cmd_query)


def cmd_query(args: argparse.Namespace) -> int:
    """Print the result as it comes; refused SQL, a missing or locked database are user errors."""
    from birdassets.cli.format import write_frames
    from birdassets.settings import load_settings
    from birdassets.store import stream_query

    try:
        with stream_query(load_settings().layout.db_path, args.sql, limit=args.limit or None) as result:
            rows = write_frames(result, args.format, sys.stdout)
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if result.truncated:
        print(
            f"birdassets query: printed the first {rows} rows; the result has more "
            f"(--limit N for more, --limit 0 for all)",
            file=sys.stderr,
        )
    return 0
