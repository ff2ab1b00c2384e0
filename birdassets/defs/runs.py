"""Helpers for runs executed in process (the CLI and tests): readable failure messages."""

from __future__ import annotations


def step_failure_messages(result) -> list[str]:
    """``"<step>: <message>"`` for every failed step of an ``execute_in_process`` result, with the root
    cause's message (Dagster wraps user errors in a DagsterExecutionStepExecutionError)."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.event_specific_data.error
        while error.cause is not None:
            error = error.cause
        messages.append(f"{event.step_key}: {error.cls_name}: {error.message.strip()}")
    return messages
