"""Helpers for tests that start a child process and interrupt it."""

from __future__ import annotations

import signal


def restore_ctrl_c() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT. A shell starts background jobs with SIGINT
    ignored, Python then installs no KeyboardInterrupt handler, and the child would run on as if nothing happened:
    the default disposition makes the test independent of how the suite was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
