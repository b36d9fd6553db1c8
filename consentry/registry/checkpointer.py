"""Checkpoints on a cadence: one signer per process, not one checkpoint per decision.

A decision gets its log index when its write transaction commits; its proof (a
signed checkpoint covering it and its inclusion proof) comes once a checkpoint of
a tree larger than its index is signed. :class:`Checkpointer` signs one every
``interval`` seconds while the log grew (a background thread in a long-running
process such as ``consentry serve``), and hands out covering notes to whoever
must wait for one (a job releasing signed outputs).

Invariants
- Every note handed out is a checkpoint of this log, signed by
  :meth:`Registry.checkpoint` (which refuses a log that does not extend the
  witness) or read back from the checkpoints the registry stored (a checkpoint
  another process signed, parsed, and whose tree size covers the index asked for):
  ``registry.inclusion_proof(index, note)`` proves the entry against it, and the
  verifier checks the note's signature and the path offline as before.
- :meth:`covering` waits at most ``wait`` seconds for the cadence, then signs a
  checkpoint itself: a released output never waits more than about ``wait`` plus
  one signing, and never goes out without its proof.
- A checkpoint that cannot be signed (a truncated or rewritten log: RollbackError)
  is raised to every caller waiting for it, never swallowed: nothing is released.
- :meth:`stop` signs a last checkpoint, so a process that logged entries leaves
  none uncovered when it exits cleanly (one-shot CLI processes use
  ``with Checkpointer(registry, interval=None): ...`` or per-decision mode).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from consentry.errors import ConsentryError, NotFoundError
from consentry.registry import checkpoint as cp

if TYPE_CHECKING:
    from consentry.registry.store import InclusionProof, Registry

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_WAIT",
    "INTERVAL_ENV",
    "Checkpointer",
    "tlog_proof",
]

DEFAULT_INTERVAL = 1.0  # seconds between checkpoints while the log grows
DEFAULT_WAIT = 1.0  # how long a release waits for the cadence before signing itself
INTERVAL_ENV = "CONSENTRY_CHECKPOINT_INTERVAL"
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"

_log = logging.getLogger("consentry.checkpointer")


def tlog_proof(proof: InclusionProof) -> str:
    """The proof as a C2SP tlog-proof (``c2sp.org/tlog-proof@v1``): the header, the
    entry's ``index``, the inclusion path (base64, one hash a line), an empty line,
    then the checkpoint note with its signatures. The leaf itself is not part of
    the format: the verifier hashes the entry it holds (``GET /v1/log/proof`` also
    returns it in JSON)."""
    lines = [TLOG_PROOF_HEADER, f"index {proof.index}"]
    lines += [base64.b64encode(h).decode("ascii") for h in proof.hashes]
    return "\n".join(lines) + "\n\n" + proof.checkpoint


class Checkpointer:
    """Signs checkpoints of ``registry``'s log every ``interval`` seconds while it grows.

    ``interval=None``: no background thread; checkpoints are signed only by
    :meth:`flush`, :meth:`covering` (immediately, nothing to wait for) and
    :meth:`stop`. Thread-safe: one instance serves every thread of a process.
    """

    def __init__(
        self,
        registry: Registry,
        interval: float | None = DEFAULT_INTERVAL,
        wait: float = DEFAULT_WAIT,
    ) -> None:
        if interval is not None and not interval > 0:
            raise ValueError("a checkpoint interval is a positive number of seconds")
        if not wait >= 0:
            raise ValueError("a checkpoint wait is zero or more seconds")
        self.registry = registry
        self.interval = interval
        self.wait = wait
        self._sign_lock = threading.Lock()  # one signer per process at a time
        self._changed = threading.Condition()
        self._size = 0  # the tree size of self._note
        self._note: str | None = None
        self._error: ConsentryError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.signed = 0  # checkpoints this instance signed (for tests and benches)

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Checkpointer:
        """Start the background signer (no-op without an interval or when running)."""
        if self.interval is None or self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="checkpointer", daemon=True)
        self._thread.start()
        return self

    def stop(self, final: bool = True) -> None:
        """Stop the background signer; ``final``: sign a last checkpoint covering
        every entry logged so far (errors are logged, not raised: shutting down)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
        if final:
            try:
                self.flush()
            except ConsentryError as exc:
                _log.error("last checkpoint not signed: %s", exc)

    def __enter__(self) -> Checkpointer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _loop(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except ConsentryError as exc:  # kept in self._error for every waiter
                _log.error("checkpoint not signed: %s", exc)
            except Exception:  # a database hiccup: the next tick retries
                _log.exception("checkpoint not signed")

    # ------------------------------------------------------------------ signing
    @property
    def covered_size(self) -> int:
        """The tree size of the newest checkpoint this instance has seen."""
        return self._size

    def _publish(self, note: str, size: int, error: ConsentryError | None = None) -> None:
        with self._changed:
            if size > self._size or self._note is None:
                self._size, self._note = size, note
            self._error = error
            self._changed.notify_all()

    def _fail(self, error: ConsentryError) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()

    def flush(self) -> str:
        """A checkpoint covering every entry committed before this call: the newest
        stored one if it already does (signed by any process), else one signed now.
        Raises what :meth:`Registry.checkpoint` raises (RollbackError)."""
        with self._sign_lock:
            size = self.registry.log_size()
            if self._note is not None and self._size >= size and self._error is None:
                return self._note
            stored = self._stored(size)
            if stored is not None:
                self._publish(stored[0], stored[1])
                return stored[0]
            try:
                note = self.registry.checkpoint()
            except ConsentryError as exc:
                self._fail(exc)
                raise
            self.signed += 1
            self._publish(note, cp.parse_checkpoint(note)[0].tree_size)
            return note

    def _stored(self, size: int) -> tuple[str, int] | None:
        """The newest stored checkpoint when it covers ``size`` entries (another
        process signed it), else None. Only a clean state may reuse one: after a
        refused checkpoint every flush goes through ``Registry.checkpoint`` again."""
        if self._error is not None:
            return None
        try:
            note = self.registry.latest_checkpoint()
        except NotFoundError:
            return None
        tree_size = cp.parse_checkpoint(note)[0].tree_size
        return (note, tree_size) if tree_size >= size else None

    def covering(self, index: int, wait: float | None = None) -> str:
        """A checkpoint note whose tree holds entry ``index``.

        Returns at once when one is known; else waits up to ``wait`` (default
        ``self.wait``) seconds for the background signer, then signs one itself.
        Raises the signer's error (RollbackError) rather than return a note that
        was not signed over the log as it is.
        """
        if index < 0:
            raise NotFoundError(f"entry {index} is not in the log")
        budget = self.wait if wait is None else wait
        if self.running and budget > 0:
            deadline = time.monotonic() + budget
            with self._changed:
                while self._size <= index and self._error is None:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self.running:
                        break
                    self._changed.wait(left)
                if self._size > index and self._error is None and self._note is not None:
                    return self._note
        note = self.flush()
        if cp.parse_checkpoint(note)[0].tree_size <= index:
            raise NotFoundError(f"entry {index} is not in the log")
        return note

    def proof(self, index: int, wait: float | None = None) -> InclusionProof:
        """The inclusion proof of entry ``index`` against a checkpoint covering it."""
        return self.registry.inclusion_proof(index, self.covering(index, wait))
