"""The delta filter: which of a run's profiles are sent, judged against the sync state as the run found
it, and the run's counts of added, updated and unchanged profiles."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from shared.sync.members import NO_FINGERPRINTS, ListMembers
from shared.sync.options import SyncOptions
from shared.sync.state import SyncState, isin_sorted


class SyncCounts(Protocol):
    """The run's counts a sync adds to (the engine's report counts)."""

    added: int
    updated: int
    unchanged: int
    removed: int


class DeltaFilter:
    """The same filter for every invocation of a run: the state is the one the run found, whatever
    Klaviyo accepts meanwhile. With the list's members read (reconcile), the profiles of the state that
    are no longer on the list are sent again, and a member's profile id counts as known."""

    def __init__(
        self, options: SyncOptions, counts: SyncCounts, state: SyncState | None = None, count_read: bool = False
    ) -> None:
        self.full, self.mirror, self.counts = options.full, options.mirror, counts
        self.state = state
        # A dry run counts the profiles it would add and update as it reads them; a run that sends
        # counts them as Klaviyo accepts them (see `accepted`), so a run that fails part-way never
        # says it added more than Klaviyo accepted.
        self.count_read = count_read
        self.off_list = NO_FINGERPRINTS  # identifier fingerprints of profiles of the state not on the list
        self.on_list = NO_FINGERPRINTS  # every identifier fingerprint of a list member, sorted
        # Mirror: every identifier fingerprint the register and the runs' logs hold, sorted.
        self.registered = NO_FINGERPRINTS

    def reconcile(self, members: ListMembers) -> None:
        """Takes the list's members into account (read after the state, which stays whatever happens)."""
        self.off_list = members.off_list(self.state)
        self.on_list = members.known

    def to_send(self, ids: np.ndarray, prints: np.ndarray) -> np.ndarray | None:
        """Counts a chunk's profiles (identifier and profile fingerprints) against the state; returns
        a mask of those to send, or None to send all of them. Every profile the state has that is
        sent counts as updated (changed, off the list, or its identifier to record), once accepted."""
        state, counts = self.state, self.counts
        if state is None or not len(state):
            self._count_read(len(ids), 0)
            return None
        at, found = state.find(ids)
        same = found & (state.fingerprints[at] == prints)
        if len(self.off_list):
            same &= ~np.isin(ids, self.off_list)
        if self.mirror:
            # A profile whose identifier the register lacks (a state kept in add mode) could never be
            # looked up once it leaves: it is sent again, and its identifier recorded on the way.
            same &= (state.profile_ids[at] != b"") | isin_sorted(ids, self.on_list) | isin_sorted(ids, self.registered)
        if self.full:  # every profile already on the list is sent again, as an update
            self._count_read(int((~found).sum()), int(found.sum()))
            return None
        self._count_read(int((~found).sum()), int((found & ~same).sum()))
        if not same.any():
            return None
        counts.unchanged += int(same.sum())
        return ~same

    def accepted(self, ids: np.ndarray) -> tuple[int, int]:
        """Of profiles Klaviyo accepted (identifier fingerprints): how many the state did not have
        (added) and how many it had (updated)."""
        state = self.state
        if self.count_read:
            return 0, 0
        if state is None or not len(state):
            return len(ids), 0
        known = int(state.known(ids).sum())
        return len(ids) - known, known

    def _count_read(self, added: int, updated: int) -> None:
        if self.count_read:
            self.counts.added += added
            self.counts.updated += updated

    def changing(self, ids: np.ndarray, prints: np.ndarray) -> np.ndarray | slice:
        """Which accepted profiles change the state: not those sent again exactly as the state has
        them (a full run, or to record their identifier), whose merge would change nothing."""
        state = self.state
        if state is None or not len(state):
            return slice(None)
        at, found = state.find(ids)
        return ~(found & (state.fingerprints[at] == prints))

    def hand_over(self) -> SyncState | None:
        """The state as the run found it, let go: it becomes the run's result, changed in place."""
        state, self.state = self.state, None
        return state
