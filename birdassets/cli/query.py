"""``birdassets query "SQL" [--format table|csv|json]``: read-only SQL on the metrics database."""

from __future__ import annotations

import argparse

from birdassets.cli.errors import UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``query``."""
    query = commands.add_parser("query", help="run read-only SQL on the metrics database")
    query.add_argument("sql")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table")
    query.set_defaults(func=cmd_query)


def cmd_query(args: argparse.Namespace) -> int:
    """Print the result; a missing database or SQL DuckDB refuses (writes included) is a user error."""
    from birdassets.cli.format import format_frame
    from birdassets.settings import load_settings
    from birdassets.store import query_readonly

    if not args.sql.strip():
        raise UserError("no SQL given, e.g. birdassets query \"select * from leaderboard\"")
    frame = query_readonly(load_settings().layout.db_path, args.sql)
    print(format_frame(frame, args.format))
    return 0
