"""Coalesced runs of one read-only check or catch-up done under a lock.

A caller that waited for the lock while another run of the same work *began after
the caller's call and completed* may reuse that run instead of doing its own: that
run read everything committed before the call, which is all the call promises. A
run that had already begun when the call came does not count (it may have read
before something the caller must see).

Use, the lock held from ``covered`` to ``completed``::

    ticket = runs.ticket()          # before taking the lock
    with lock:
        if runs.covered(ticket):
            return                  # reuse the run that began after this call
        number = runs.begin()
        do_the_work()               # an exception leaves the run incomplete
        runs.completed(number)

Invariant: only a run that completed (did not raise) covers anyone; counters only
grow. Reading ``ticket`` without the lock is safe: an int read is atomic, and a run
counted after that read began after it.
"""

from __future__ import annotations

__all__ = ["CoalescedRuns"]


class CoalescedRuns:
    """The counters of :mod:`consentry.registry.coalesce` for one piece of work."""

    def __init__(self) -> None:
        self._begun = 0  # runs that began under the lock
        self._completed = 0  # the number of the newest run that completed

    def ticket(self) -> int:
        """Taken before the lock: runs numbered above it began after this call."""
        return self._begun

    def covered(self, ticket: int) -> bool:
        """Under the lock: did a run begun after ``ticket`` complete?"""
        return self._completed > ticket

    def begin(self) -> int:
        """Under the lock: this run's number."""
        self._begun += 1
        return self._begun

    def completed(self, number: int) -> None:
        """Under the lock, after the work succeeded."""
        self._completed = number
