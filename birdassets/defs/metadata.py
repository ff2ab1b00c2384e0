"""Small helpers that turn core results into Dagster UI metadata."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def table_metadata(frame: pd.DataFrame, floatfmt: str = ".4f") -> dg.MetadataValue:
    """A DataFrame as a Markdown table (rendered in the asset's materialization panel)."""
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))
