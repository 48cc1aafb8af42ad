"""Is a RUNNING child run's process still alive? A campaign shares its store with other workers (one per
core, or other hosts) and must tell a live worker's run, which it leaves alone, from one whose process was
killed, which it marks KILLED so the work is redone.

Same host: the run's pid tag names no process, or one started later than the run's (a reused pid).
Another host: no heartbeat tag newer than ``STALE_AFTER_S`` (the campaign refreshes it every epoch).
"""
from __future__ import annotations

import socket
import time
from typing import Any

import pandas as pd
import psutil

from hqcbench import names
from hqcbench.tracking import runs as tracking

STALE_AFTER_S = 1800  # a RUNNING run on another host whose heartbeat is older than this is dead


def process_alive(tags: dict[str, Any]) -> bool | None:
    """True/False for a run recorded on this host; None when it ran elsewhere (heartbeat decides)."""
    if tags.get(names.TAG_HOST) != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(tags.get(names.TAG_PID, "-1")))
        started = float(tags.get(names.TAG_PID_START, "nan"))
        return abs(proc.create_time() - started) < 1.0
    except (psutil.Error, ValueError):
        return False


def is_dead(row: pd.Series, now: float) -> bool:
    tags = {k[len("tags."):]: v for k, v in row.items() if isinstance(k, str) and k.startswith("tags.")}
    alive = process_alive(tags)
    if alive is not None:
        return not alive
    heartbeat = pd.to_numeric(tags.get(names.TAG_HEARTBEAT, float("nan")), errors="coerce")  # no tag: NaN
    last = heartbeat if pd.notna(heartbeat) else row["start_time"].timestamp()
    return now - float(last) > STALE_AFTER_S


def reap(runs: pd.DataFrame) -> list[str]:
    """Mark RUNNING runs whose process is gone KILLED, with the reason; their ids."""
    now = time.time()
    killed = []
    for _, row in runs[runs.status == "RUNNING"].iterrows():
        if is_dead(row, now):
            tracking.mark_killed(row.run_id, "its process is gone (found by a later campaign call)")
            killed.append(row.run_id)
    return killed
