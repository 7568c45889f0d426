"""Encoding a cold run's blocks of examples in worker processes (`cache.encode_processes`): tokenizing and
label encoding on another core than the reading, merging and writing (docs/data_at_scale.md, "Parallel
preparation").

The parent has TensorFlow loaded and runs threads, so a worker is a fresh interpreter (`subprocess`, never a
fork after TensorFlow; not multiprocessing's "spawn" either, which imports the parent's main script again:
a script without `if __name__ == "__main__"` would run twice). It talks over two pipes (pickled messages,
`multiprocessing.connection`), imports TensorFlow as soon as it starts (9 to 13 s, while the parent learns
the vocabulary), builds the encoder once from the vocabulary or a preset's tokenizer record (`setup`), then
encodes the blocks it is sent with `streamed.encode_block` (the function the in-thread path runs) and sends
back their columns (`ColumnBlock`s). Blocks go to the workers in turn and are taken back in the same turn: in
order. An error raised in a worker is raised in the parent as it was raised (a `DataError` with its
message); `close` ends the workers (after the last block, on an error, on KeyboardInterrupt: a worker
ignores SIGINT, is told to stop, and is terminated if it does not).
"""

import collections
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection

from keras_mtl.errors import KerasMTLError

LOOKAHEAD = 2  # blocks sent ahead per process: memory of (LOOKAHEAD + 1) blocks per process
_POLL_S = 1.0  # how often a waiting parent checks that its worker still runs


def _error(e):
    """The reply of a failure: the exception itself when it pickles, else a RuntimeError with its traceback."""
    try:
        pickle.dumps(e)
        return "error", e
    except Exception:
        return "error", RuntimeError(f"in an encoding process: {traceback.format_exc()}")


# The worker's program: its first message is the parent's `sys.path` (where keras_mtl is found).
_PROGRAM = (
    "import sys; from multiprocessing.connection import Connection; "
    "inbox = Connection(int(sys.argv[1]), writable=False); sys.path[:] = inbox.recv(); "
    "from keras_mtl.data.encode_process import serve; serve(inbox, Connection(int(sys.argv[2]), readable=False))"
)


def _import_tensorflow():
    """Import what encoding needs (TensorFlow). Quiet as the parent is: when it asked TensorFlow for no log
    lines (`TF_CPP_MIN_LOG_LEVEL=3`, the CLI's default), the lines its libraries log while they load go to
    /dev/null (an import that fails is reported to the parent as an exception)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        import keras_mtl.data.pipeline  # noqa: F401
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        import keras_mtl.data.pipeline  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def serve(inbox, outbox):
    """A worker's loop: ("setup", (vocabulary, record, model_cfg, tasks, classes)) once, then ("block",
    (examples, before, max_windows)) answered by ("ok", (columns, ColumnBlock)) or ("error", exception);
    None (or the parent's end of the pipe closed) stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it (`close`)
    setup, failure = None, None
    try:
        _import_tensorflow()  # now, while the parent learns the vocabulary
        from keras_mtl.data.streamed import encode_block
        from keras_mtl.data.tokenize import encoder_of
    except BaseException as e:
        failure = _error(e)
    while True:
        try:
            message = inbox.recv()
        except EOFError:
            return
        if message is None:
            return
        kind, args = message
        if kind == "setup":
            if failure is None:
                vocabulary, record, model_cfg, tasks, classes = args
                try:
                    setup = (encoder_of(vocabulary, record, model_cfg), tasks, classes)
                except BaseException as e:  # told at the first block
                    failure = _error(e)
            continue
        if failure is not None:
            outbox.send(failure)
            continue
        examples, before, max_windows = args
        encoder, tasks, classes = setup
        try:
            reply = "ok", encode_block(examples, before, encoder, tasks, classes, max_windows)
        except BaseException as e:
            reply = _error(e)
        outbox.send(reply)


class _Worker:
    """One worker process, its two pipes, and a thread that sends it messages (a send never blocks the
    parent, so a worker sending a large reply and a parent sending the next block never wait on each other)."""

    def __init__(self, name):
        self.name = name
        to_child, child_in = os.pipe()[::-1]  # (write end, read end)
        child_out, from_child = os.pipe()[::-1]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _PROGRAM, str(child_in), str(child_out)], pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (to_child, child_in, child_out, from_child):
                os.close(fd)
            raise
        os.close(child_in)
        os.close(child_out)
        self.inbox = Connection(to_child, readable=False)
        self.outbox = Connection(from_child, writable=False)
        self.outgoing = queue.Queue()
        self.outgoing.put(list(sys.path))
        self.pending = 0  # blocks sent and not answered
        self.sender = threading.Thread(target=self._send, name=f"{name}-send", daemon=True)
        self.sender.start()

    def _send(self):
        while True:
            message = self.outgoing.get()
            try:
                self.inbox.send(message)
            except (OSError, ValueError):  # the worker ended: `receive` says so
                return
            if message is None:
                return

    def send(self, message):
        self.outgoing.put(message)
        if message is not None and message[0] == "block":
            self.pending += 1

    def receive(self):
        """The worker's next reply (its exception raised)."""
        while True:
            try:
                if self.outbox.poll(_POLL_S):
                    kind, value = self.outbox.recv()
                    break
            except EOFError:
                pass
            code = self.process.poll()
            if code is not None:
                raise KerasMTLError(f"the encoding process {self.name} (pid {self.process.pid}) ended with exit code "
                                    f"{code} before it answered (killed? out of memory?); nothing was written. "
                                    f"cache.encode_processes: 0 encodes in this process")
        self.pending -= 1
        if kind == "error":
            raise value
        return value

    def close(self, timeout):
        """Tell the worker to stop and wait for it; terminated at once if it still owes replies (the
        consumer stopped early: an error, KeyboardInterrupt), or after `timeout` s."""
        if self.pending:
            self.process.terminate()
        self.send(None)
        self.sender.join(timeout)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for connection in (self.inbox, self.outbox):
            connection.close()


class EncodeProcesses:
    """`count` worker processes that encode blocks of examples, started at once (their imports overlap the
    parent's work until `setup`); a context manager, `close` idempotent."""

    def __init__(self, count):
        self.workers = []
        try:
            for i in range(count):
                self.workers.append(_Worker(f"keras-mtl-encode-{i}"))
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def setup(self, vocabulary, tokenizer_record, model_cfg, tasks, classes):
        """Tell every worker how to encode: the encoder of `vocabulary` or `tokenizer_record` and
        `model_cfg`, the `tasks` and their label maps `classes`."""
        args = (list(vocabulary), tokenizer_record, model_cfg, list(tasks), dict(classes))
        for worker in self.workers:
            worker.send(("setup", args))

    def encoded(self, example_blocks, max_windows=None):
        """(columns, `ColumnBlock`) of each block of examples (`streamed.encode_block`), in order; up to
        `LOOKAHEAD` blocks per process ahead of the consumer."""
        count = len(self.workers)
        pending, sent, done = collections.deque(), 0, 0
        for examples in example_blocks:
            worker = self.workers[sent % count]
            worker.send(("block", (examples, done, max_windows)))
            pending.append(worker)
            sent += 1
            done += len(examples)
            if len(pending) > LOOKAHEAD * count:
                yield pending.popleft().receive()
        while pending:
            yield pending.popleft().receive()

    def close(self, timeout=5.0):
        """Stop the workers (told to; terminated if they do not within `timeout` s) and wait for them."""
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.close(timeout)
