"""Stop on SIGINT/SIGTERM: how every command and server process of ours ends on request.

`with stop_on_signals(stop):` around the work, inside the running loop. Ctrl-C or SIGTERM
calls `stop()` (a swarm ends its load, a server drains, a command leaves its loop); a repeated
signal while the work is still going calls it again, and a stop with phases uses that to
skip the next one (a swarm's second Ctrl-C skips its settle). Nothing is killed halfway: the
first signal is a request, and so is the second.

Once the block is left the command has only its summary or reports to write and its
processes to reap, so from then on both signals are ignored. asyncio's own
`remove_signal_handler` would put the defaults back instead, and a second Ctrl-C arriving
just after the work ended killed the process (exit -2) before or after its summary, at
random. Ignoring them is safe because nothing is left to stop: the command exits as soon as
the summary is out.

Outside the main thread, or on a loop without signal support, nothing is installed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: Callable[[], object]) -> Iterator[None]:
    """Call `stop()` on each SIGINT/SIGTERM inside the block; ignore both after it."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
