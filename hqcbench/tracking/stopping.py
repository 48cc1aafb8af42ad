"""Stopping a job cleanly: SIGTERM and Ctrl-C become one exception, ``Stopped``, that unwinds the job.

Why: Python's default SIGTERM ends the process at once -- no ``finally`` runs, so every open MLflow
run stays RUNNING forever -- and Ctrl-C raises KeyboardInterrupt, which ``with mlflow.start_run()``
records as FAILED, as if the code were broken. Inside ``stop_on_signals()`` both signals raise
``Stopped`` instead; ``runs.open_run`` ends each open run KILLED with the reason on its way out, and the
command line exits with the shell's code for the signal (128 + its number: 143 for SIGTERM, 130 for
SIGINT).

Under ``mlflow run`` (local backend) the job is a child of the ``mlflow run`` process, and two things
of that process need handling (``mlflow_run_launcher`` and the two functions after it): it does not
forward a SIGTERM sent to it alone (the job would go on, orphaned), and once the job has exited
after a Ctrl-C or its own SIGTERM it overwrites the run's status with FAILED (its "still running?"
check compares a status string with status numbers, so it never sees a run as ended).

Only the first signal raises. A later one (a second Ctrl-C, or the SIGTERM that ``mlflow run`` sends
its child right after a Ctrl-C reached both) would arrive while the runs are being ended, and raising
again would cut that short; it is ignored. ``critical()`` defers a first signal over the few calls that
must not be cut in half (creating a run, ending one) and raises it as soon as they are done.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Iterator

import psutil

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """The job was asked to stop (SIGTERM, or SIGINT / Ctrl-C).

    A ``BaseException``, like KeyboardInterrupt, so that ``except Exception`` blocks written for
    genuine failures (a failed trial, an optional plot) let it through to the top.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(self.reason)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum

    @property
    def reason(self) -> str:
        """What ``hqcbench.stopped`` says on the runs this stop ended."""
        if self.signum == signal.SIGINT:
            return "Ctrl-C (SIGINT)"
        return f"{self.signal_name} received"

    @property
    def label(self) -> str:
        """How the one-line stop message names the signal."""
        return "Ctrl-C (SIGINT)" if self.signum == signal.SIGINT else self.signal_name


class _State:
    """Process-wide, like the signal dispositions it goes with."""

    stopping: Stopped | None = None  # the first stop signal, once one arrived
    pending: bool = False  # it arrived inside critical() and is raised at its end
    depth: int = 0  # nesting of critical()


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _State.stopping is not None:
        return  # already stopping: the runs are being ended, let that finish
    _State.stopping = Stopped(signum)
    if _State.depth > 0:
        _State.pending = True
        return
    raise _State.stopping


def as_stopped(exc: BaseException) -> Stopped | None:
    """``exc`` as a stop: itself if it is one, the SIGINT case for a KeyboardInterrupt, else None."""
    if isinstance(exc, Stopped):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Stopped(signal.SIGINT)
    return None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Hold a first stop signal until the block is done, then raise it (a run is never half-created
    or half-ended). Outside ``stop_on_signals()`` it changes nothing."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending:
            _State.pending = False
            raise _State.stopping  # type: ignore[misc]


@contextlib.contextmanager
def stop_on_signals(on_stop: Callable[[Stopped], None] | None = None) -> Iterator[None]:
    """For the duration of a job: SIGTERM and SIGINT raise ``Stopped`` (once), a KeyboardInterrupt
    raised anyway leaves as ``Stopped(SIGINT)``; the previous handlers are restored afterwards.

    ``on_stop`` runs on the way out of a stop, while later signals are still ignored (the last
    clean-up must not be cut short either). Handlers can only be installed from the main thread;
    elsewhere only the KeyboardInterrupt translation applies.
    """
    install = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in HANDLED} if install else {}
    _State.stopping, _State.pending, _State.depth = None, False, 0
    try:
        for sig in previous:
            signal.signal(sig, _handler)
        yield
    except BaseException as exc:
        stop = as_stopped(exc)
        if stop is None:
            raise
        _State.stopping = _State.stopping or stop  # from here on, a signal is ignored
        if on_stop is not None:
            on_stop(stop)
        if stop is exc:
            raise
        raise stop from exc
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        _State.stopping, _State.pending, _State.depth = None, False, 0


# ------------------------------------------------------------------------------------- under `mlflow run`
_SHELLS = ("bash", "sh", "dash", "zsh")  # what may stand between `mlflow run` and the job's command
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _is_mlflow_run(cmdline: list[str]) -> bool:
    """``mlflow run ...`` or ``python -m mlflow run ...``."""
    return any(os.path.basename(a) == "mlflow" and b == "run" for a, b in zip(cmdline, cmdline[1:]))


def mlflow_run_launcher() -> psutil.Process | None:
    """The ``mlflow run`` process that started this one -- its parent, or the parent of the shell that
    runs the entry point's command -- or None (not launched by the ``mlflow run`` command line)."""
    with contextlib.suppress(psutil.Error, IndexError):
        proc = psutil.Process().parent()
        for _ in range(3):
            if proc is None:
                return None
            cmdline = proc.cmdline()
            if _is_mlflow_run(cmdline):
                return proc
            if os.path.basename(cmdline[0]) not in _SHELLS:
                return None
            proc = proc.parent()
    return None


def _parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent exits (0: stop asking)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    return False


def follow_launcher(launcher: psutil.Process | None) -> None:
    """Stop when the ``mlflow run`` parent is ended: it does not pass a SIGTERM sent to it alone
    (``kill <pid>``, ``timeout``) on to the job. Linux only, and only when it is the direct parent;
    call it inside ``stop_on_signals()``, so the signal becomes ``Stopped``."""
    if launcher is None or launcher.pid != os.getppid():
        return
    if _parent_death_signal(signal.SIGTERM) and os.getppid() != launcher.pid:
        os.kill(os.getpid(), signal.SIGTERM)  # it was ended before the request took effect


def end_launcher(launcher: psutil.Process | None) -> None:
    """After a stop, end the ``mlflow run`` parent before this process exits: it is waiting for the
    job, and would then overwrite the KILLED run with FAILED. It exits 143 (SIGTERM) instead."""
    if launcher is None:
        return
    _parent_death_signal(0)  # its end must not signal this process again
    with contextlib.suppress(psutil.Error):
        if launcher.is_running():
            launcher.terminate()
