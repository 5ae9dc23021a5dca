#!/usr/bin/env -S ${MOLTSCHED_PYTHON}
"""Demo task: counts up by one per run and keeps the count in its checkpoint."""

from scheduler_core.checkpoint import load_checkpoint, save_checkpoint

state = load_checkpoint() or {"count": 0}
state["count"] += 1
save_checkpoint(state)
print(f"count is now {state['count']}")
