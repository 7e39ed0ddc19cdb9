"""One run's part in a segment sync: the delta filter, what Klaviyo accepted and (mirror mode) the
identifiers of what it sends, and taking the profiles that left the segment off the list."""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from shared.klaviyo import KlaviyoClient
from shared.mapping import fingerprints
from shared.sync.accepted import AcceptedProfiles
from shared.sync.delta import DeltaFilter, SyncCounts
from shared.sync.lookup import StopReason, find_on_list, settle_import_jobs
from shared.sync.members import NO_PROFILE_IDS, ListMembers
from shared.sync.mirror import Removals, safety_stop, take_off_list
from shared.sync.options import SyncOptions
from shared.sync.register import NO_IDS, Register, SendingLog, sorted_unique
from shared.sync.state import Int64Blocks, SyncState, SyncStateStore, isin_sorted

log = logging.getLogger(__name__)


class AcceptedCounts(NamedTuple):
    """Of a job's profiles Klaviyo accepted: those not on the list from an earlier run, and those that were."""

    added: int = 0
    updated: int = 0


class SyncRun:
    """Created by the engine for a run with a sync state; `accepted` may be called from several
    threads. A dry run (no client, or `dry_run`) counts what it would remove without removing it."""

    def __init__(
        self,
        store: SyncStateStore,
        options: SyncOptions,
        list_id: str,
        run_id: str,
        counts: SyncCounts,
        client: KlaviyoClient | None,
        dry_run: bool = False,
    ) -> None:
        self.store, self.options, self.list_id, self.client = store, options, list_id, client
        self.counts, self.dry_run = counts, dry_run
        self.mirror = options.mirror
        self.list_members: int | None = None  # reconcile: how many members the list had
        self.members: ListMembers | None = None  # reconcile: the list's members as Klaviyo has them
        self.delta = DeltaFilter(options, counts, count_read=self._counts_read)  # until `load` finds the state
        self.loaded = False
        # counts.removed grows under it as Klaviyo confirms each removal call; added and updated as jobs finish.
        self.lock = threading.Lock()
        self.accepted_profiles = AcceptedProfiles()
        self.segment = Int64Blocks()  # mirror mode: identifier fingerprints of every valid profile read
        self.run_id, self.pending_name = run_id, f"run-{run_id}.npz"
        self._final: SyncState | None = None
        # Mirror mode: the identifiers of the profiles the export put on the list, and this
        # invocation's log of those it is about to send (written before they can be sent).
        self.register = Register(store)
        self.sending = SendingLog(store, run_id) if self.mirror and not self._counts_read else None
        self.dropped = Int64Blocks()  # mirror: profiles taken off the list, or found not on it
        self.settle_timeout = 3600.0  # mirror: the longest wait for earlier runs' jobs before removing

    # -- before and while sending ------------------------------------------------------------------
    def load(self, resumed: bool) -> None:
        """Loads the state (the delta filter for all the run's invocations) and, on a resumed run,
        what its earlier invocations put aside; with reconcile, reads the list's members."""
        state = self.store.load()
        if state is not None and state.list_id != self.list_id:
            log.warning("sync state in %s is for another list; this run starts a new one", self.store.location)
            state = None
        self.delta = DeltaFilter(self.options, self.counts, state, count_read=self._counts_read)
        if self.mirror and state is not None and len(state):
            self.delta.registered = self.register.ids(self.run_id)
        if resumed and (pending := self.store.load(self.pending_name)) is not None:
            self.accepted_profiles.restore(pending)
        self.loaded = True
        if self.options.reconcile and self.client is not None:
            self._read_members(self.client)

    def _read_members(self, client: KlaviyoClient) -> None:
        """Reads the list's members: the profiles the state has that are no longer on the list are
        sent again, and the members' profile ids are learnt."""
        self.members = ListMembers.read(client, self.list_id)
        self.list_members = len(self.members)
        self.delta.reconcile(self.members)
        if len(self.delta.off_list):
            count = len(self.delta.off_list)
            log.info("reconcile: %d profile(s) of the state are no longer on the list; sent again", count)

    def changed(
        self, identifiers: pa.Array | None, bodies: pa.BinaryArray
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Fingerprints a chunk's profiles and counts them against the state; returns a mask of
        those to send (None: all of them), their identifier and profile fingerprints."""
        if identifiers is None:
            raise ValueError("a sync run needs the mapper's identifier texts")
        ids, prints = fingerprints(identifiers), fingerprints(bodies)
        if self.mirror:
            self.segment.extend(ids)
        send = self.delta.to_send(ids, prints)
        if self.sending is not None:  # before any of them can be sent, so a leaver is never unknown
            sent = ids if send is None else ids[send]
            self.sending.append(sent, identifiers if send is None else identifiers.filter(pa.array(send)))
        return send, ids, prints

    @property
    def _counts_read(self) -> bool:
        """A dry run counts what it would add and update as it reads; a run that sends, as Klaviyo accepts."""
        return self.dry_run or self.client is None

    def accepted(self, job_id: str, ids: np.ndarray, prints: np.ndarray) -> AcceptedCounts:
        """A finished job's profiles that Klaviyo imported: their identifier and profile fingerprints.
        Returns how many of them it added to the list and how many it updated (counted here)."""
        counted = AcceptedCounts(*self.delta.accepted(ids))
        self.count_accepted(counted)
        kept = self.delta.changing(ids, prints)
        self.accepted_profiles.add(ids[kept], prints[kept])
        return counted

    def count_accepted(self, counted: AcceptedCounts) -> None:
        """Counts profiles Klaviyo accepted as added and updated (also those of jobs an earlier
        invocation of the run saw finish)."""
        with self.lock:
            self.counts.added += counted.added
            self.counts.updated += counted.updated

    # -- at the end ----------------------------------------------------------------------------------
    def _merged(self) -> SyncState:
        """The state as the run leaves it: what it found, plus what Klaviyo accepted in this run."""
        if self._final is None:
            # The state as found becomes the result (changed in place): the run has read every row.
            found = self.delta.hand_over()
            final = found if found is not None else SyncState(self.list_id)
            self.accepted_profiles.merge_into(final)
            if self.members is not None:
                self.members.give_profile_ids(final)
            self._final = final
        return self._final

    def remove_departed(self, stop_reason: StopReason = lambda: None) -> str | None:
        """Mirror mode: takes the profiles that left the segment off the list (never deletes or
        unsubscribes them): every profile the register or a run's log holds that is not in the segment
        is looked up on the list, by its identifier, and removed if found there. Returns why nothing
        was removed when the safety stop holds it back. Raises RemovalStopped when `stop_reason` gives a
        reason while it waits for earlier import jobs."""
        if not self.mirror:
            return None
        state = self._merged()
        self.delta.registered = NO_IDS  # the delta filter is done with it
        seen = sorted_unique(self.segment.take())
        leavers = self.register.leavers(seen)
        # States written before the register existed: departed profiles whose Klaviyo id is known.
        departed = state.absent_from(seen)
        known = departed[(state.profile_ids[departed] != b"") & ~isin_sorted(state.ids[departed], np.sort(leavers.ids))]
        strangers = NO_PROFILE_IDS if self.members is None else self.members.not_in_segment(state, seen)
        leaving = len(leavers.ids) + len(known) + len(strangers)
        if not leaving:
            return None
        # Before any lookup: counted as if every leaver were still on the list.
        on_list = max(len(state), leavers.registered, 0 if self.members is None else len(self.members))
        stop = safety_stop(self.options, leaving, on_list, segment_size=len(seen))
        if stop is not None:
            return stop
        if self.dry_run or self.client is None:
            self.counts.removed = leaving
            return None
        settle_import_jobs(self.client, self.settle_timeout, stop_reason)
        found = find_on_list(self.client, self.list_id, leavers.ids, leavers.texts)
        if len(found.absent):  # not on the list (any more): nothing to remove
            state.drop(found.absent)
            self.dropped.extend(found.absent)
            log.info("mirror: %d profile(s) that left the segment were not on the list", len(found.absent))
        removals = Removals.of(found, state, known, strangers)
        take_off_list(self.client, self.list_id, state, removals, self._count_removed, self.dropped.extend)
        return None

    def _count_removed(self, count: int) -> None:
        with self.lock:
            self.counts.removed += count

    def save(self, finished: bool) -> None:
        """Saves what Klaviyo accepted: into the state once the run is finished (whatever its
        outcome), or aside (for the run's next invocation) when its time budget ran out. In mirror
        mode a finished run also folds every run's log into the register (its own and those of runs
        that were killed), without the profiles it took off the list or found not on it."""
        if not self.loaded:
            return
        if not finished:
            aside = self.accepted_profiles.aside(self.list_id)
            if aside is not None:
                self.store.save(aside, self.pending_name)
            return
        self.store.save(self._merged())
        self._final = None  # let go before the register is rewritten: a large state is not held twice
        self.store.delete(self.pending_name)
        # The logs go only once the register holds them: a run killed in between leaves them for the next.
        if self.mirror:
            self.register.delete(self.register.fold(sorted_unique(self.dropped.take())))
