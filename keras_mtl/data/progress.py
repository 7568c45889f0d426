"""Progress of slow data steps, on stderr.

Reading a big treebank, computing a word-piece vocabulary or encoding 80,000
texts takes seconds to minutes. Each such step runs inside `step(...)`:

    with progress.step("reading conll2000/train.txt"):
        ...

    with progress.step("encoding texts", total=len(texts)) as advance:
        for batch in batches:
            ...
            advance(len(batch))          # or advance(0, note="pass 2")

A step that ends within `DELAY` seconds prints nothing, so quick commands and
tests stay silent. A slower one is announced on stderr (never stdout: `--json`
output stays clean):

* on a terminal, one line that is redrawn in place with the elapsed time (and
  `done/total` when the step counts), and ends with `done in 12.3 s`;
* anywhere else (a log file, CI), one line when the step is announced and one
  when it ends.

`set_enabled(False)` (or `KERAS_MTL_PROGRESS=0` in the environment) turns all
of it off, e.g. for a `--quiet` command line.
"""

import contextlib
import os
import shutil
import sys
import threading
import time

# Seconds a step may run before it is announced: "more than a few seconds"
# (the demo's steps, 1-3 s each, stay silent).
DELAY = 5.0
# Seconds between two redraws on a terminal.
INTERVAL = 0.5

_enabled = None  # None: decided by $KERAS_MTL_PROGRESS (on unless "0")


def set_enabled(flag):
    """Turn progress output on (True), off (False) or back to the default (None)."""
    global _enabled
    _enabled = None if flag is None else bool(flag)


def enabled():
    """Whether `step` may print (the flag, else `$KERAS_MTL_PROGRESS` != "0")."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("KERAS_MTL_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def display_path(path):
    """`path` relative to the working directory when it lies below it."""
    text = str(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:  # another drive (Windows)
        return text
    return text if rel.startswith("..") else rel


def _seconds(value):
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} min {int(value % 60)} s"


class _Step:
    def __init__(self, what, total, stream, delay, interval):
        self.what = what
        self.total = total
        self.done = 0
        self.note = ""
        self.stream = stream
        self.delay = delay
        self.interval = interval
        self.start = time.monotonic()
        self.shown = False
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._width = 0
        self._thread = threading.Thread(target=self._run, name="keras-mtl-progress", daemon=True)

    def advance(self, n=1, note=None):
        self.done += n
        if note is not None:
            self.note = str(note)

    def _counts(self):
        note = f" {self.note}" if self.note else ""
        if self.total is None:
            return (f" {self.done:,}" if self.done else "") + note
        return f" {min(self.done, self.total):,}/{self.total:,}{note}"

    def _write(self, text, end=""):
        try:
            if self.tty:
                # One physical line, or `\r` cannot redraw it.
                width = shutil.get_terminal_size((100, 24)).columns - 1
                if len(text) > width > 3:
                    text = text[: width - 3] + "..."
                pad = max(0, self._width - len(text))
                self.stream.write("\r" + text + " " * pad + end)
                self._width = len(text)
            else:
                self.stream.write(text + end)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: drop progress
            self._stop.set()

    def _run(self):
        if self._stop.wait(self.delay):
            return
        with self._lock:
            if self._stop.is_set():
                return
            self.shown = True
            if self.tty:
                self._write(f"{self.what} ...{self._counts()} {_seconds(time.monotonic() - self.start)}")
            else:
                self._write(f"{self.what} ...", end="\n")
        while self.tty and not self._stop.wait(self.interval):
            with self._lock:
                if not self._stop.is_set():
                    self._write(f"{self.what} ...{self._counts()} {_seconds(time.monotonic() - self.start)}")

    def finish(self, failed):
        with self._lock:
            self._stop.set()
            if self.shown:
                outcome = "stopped" if failed else "done"
                self._write(f"{self.what}: {outcome} in {_seconds(time.monotonic() - self.start)}", end="\n")
        self._thread.join()


@contextlib.contextmanager
def step(what, total=None, stream=None, delay=None, interval=None):
    """Run the body as one named step; announce it on stderr if it is slow.

    Args:
        what: what the step does, e.g. "reading conll2000/train.txt".
        total: the number of items the step processes, if it counts them.
        stream: where to write (default: `sys.stderr` at the time of the call).
        delay: seconds before the step is announced (default `DELAY`).
        interval: seconds between redraws on a terminal (default `INTERVAL`).

    Yields:
        `advance(n=1, note=None)`: call it as items are done, to show
        `done/total`; `note` replaces the text shown after the counts.
    """
    if not enabled():
        yield lambda n=1, note=None: None
        return
    s = _Step(
        what,
        total,
        stream if stream is not None else sys.stderr,
        DELAY if delay is None else delay,
        INTERVAL if interval is None else interval,
    )
    s._thread.start()
    failed = True
    try:
        yield s.advance
        failed = False
    finally:
        s.finish(failed)
