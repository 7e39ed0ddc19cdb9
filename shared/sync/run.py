"""One run's part in a segment sync: the delta filter, what Klaviyo accepted, profile ids, and (mirror
mode) taking the profiles that left the segment off the list, with its safety stop."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy as np
import pyarrow as pa

from shared.klaviyo import KlaviyoClient
from shared.mapping import fingerprints, text_fingerprints
from shared.sync.options import SyncOptions
from shared.sync.state import Int64Blocks, SyncState, SyncStateStore

log = logging.getLogger(__name__)

_EMPTY_IDS = np.zeros(0, dtype=np.int64)


class SyncCounts(Protocol):
    """The run's counts this sync adds to (the engine's report counts)."""

    added: int
    updated: int
    unchanged: int
    removed: int


class SyncRun:
    """Created by the engine for a run with a sync state; thread-safe where jobs finish. A dry run
    (no client, or `dry_run`) counts what it would remove without removing it."""

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
        self.state: SyncState | None = None  # as the run found it: the delta filter for all its invocations
        self.loaded = False
        self.lock = threading.Lock()
        self.accepted_ids = Int64Blocks()
        self.accepted_prints = Int64Blocks()
        self.learnt_ids: list[np.ndarray] = []  # identifier fingerprints whose Klaviyo profile id was read
        self.learnt_pids: list[np.ndarray] = []
        self.segment = Int64Blocks()  # mirror mode: identifier fingerprints of every valid profile read
        self.pending_name = f"run-{run_id}.npz"
        self._final: SyncState | None = None
        # reconcile: the list's members as Klaviyo has them (profile ids, fingerprints of each identifier)
        self.member_pids: np.ndarray | None = None
        self.member_ids: list[np.ndarray] = []  # one array per identifier kind (email, phone, external id)
        self.member_known = _EMPTY_IDS  # every identifier fingerprint of a member, sorted
        self.off_list = _EMPTY_IDS  # in the state, yet no longer on the list: sent again

    # -- before and while sending ------------------------------------------------------------------
    def load(self, resumed: bool) -> None:
        state = self.store.load()
        if state is not None and state.list_id != self.list_id:
            log.warning("sync state in %s is for another list; this run starts a new one", self.store.location)
            state = None
        self.state = state
        if resumed and (pending := self.store.load(self.pending_name)) is not None:
            self.accepted_ids.extend(pending.ids)
            self.accepted_prints.extend(pending.fingerprints)
            known = pending.profile_ids != b""
            self.learnt_ids.append(pending.ids[known])
            self.learnt_pids.append(pending.profile_ids[known])
        self.loaded = True
        if self.options.reconcile and self.client is not None:
            self._read_members()

    def _read_members(self) -> None:
        """Reads every member of the list (100 a call): profiles the state has that are no longer
        on the list are sent again; the members' profile ids are learnt."""
        assert self.client is not None
        pids: list[str] = []
        texts: list[list[str]] = [[], [], []]
        for pid, attributes in self.client.list_member_ids(self.list_id):
            pids.append(pid)
            for kind, text in zip(texts, _identifier_texts(attributes), strict=True):
                kind.append(text)
        self.member_pids = np.array(pids, dtype="S") if pids else np.zeros(0, dtype="S1")
        self.member_ids = [text_fingerprints(kind) for kind in texts]
        self.member_known = np.unique(np.concatenate(self.member_ids))
        self.list_members = len(pids)
        state = self.state
        if state is None or not len(state):
            return
        on_list = np.zeros(len(state), dtype=bool)
        for hashed in self.member_ids:
            at, found = state.find(hashed)
            on_list[at[found]] = True
        self.off_list = state.ids[~on_list]
        if len(self.off_list):
            log.info("reconcile: %d profile(s) of the state are no longer on the list; sent again", len(self.off_list))

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
        state, counts = self.state, self.counts
        if state is None or not len(state):
            counts.added += len(ids)
            return None, ids, prints
        at, found = state.find(ids)
        same = found & (state.fingerprints[at] == prints)
        if len(self.off_list):
            same &= ~np.isin(ids, self.off_list)
        if self.mirror:  # without its profile id a profile could never be removed: send it to learn it
            same &= (state.profile_ids[at] != b"") | np.isin(ids, self.member_known)
        counts.added += int((~found).sum())
        if self.options.full:  # every profile already on the list is sent again, as an update
            counts.updated += int(found.sum())
            return None, ids, prints
        counts.updated += int((found & ~same).sum())
        if not same.any():
            return None, ids, prints
        counts.unchanged += int(same.sum())
        return ~same, ids, prints

    def accepted(self, job_id: str, ids: np.ndarray, prints: np.ndarray) -> None:
        """A finished job's profiles that Klaviyo imported: their identifier and profile fingerprints."""
        kept = self._changing(ids, prints)
        with self.lock:
            self.accepted_ids.extend(ids[kept])
            self.accepted_prints.extend(prints[kept])
        if self.mirror and self.client is not None:
            self._learn_profile_ids(job_id, ids)

    def _changing(self, ids: np.ndarray, prints: np.ndarray) -> np.ndarray | slice:
        """Which accepted profiles change the state: not those sent again exactly as the state has
        them (a full run), whose merge would change nothing; in mirror mode, those whose profile id
        is to be learnt stay (an interrupted run's aside keeps the ids it learns with its profiles)."""
        state = self.state
        if state is None or not len(state):
            return slice(None)
        at, found = state.find(ids)
        same = found & (state.fingerprints[at] == prints)
        if self.mirror:
            same &= state.profile_ids[at] != b""
        return ~same

    def _learn_profile_ids(self, job_id: str, ids: np.ndarray) -> None:
        """Reads the job's profiles (100 a call) for the Klaviyo ids of profiles not known yet."""
        assert self.client is not None
        known = np.isin(ids, self.member_known)  # reconcile read them with the list's members
        state = self.state
        if state is not None and len(state):
            at, found = state.find(ids)
            known |= found & (state.profile_ids[at] != b"")
        if known.all():
            return
        pids: list[str] = []
        candidates: list[list[str]] = [[], [], []]
        for pid, attributes in self.client.import_job_profiles(job_id):
            pids.append(pid)
            for kind, text in zip(candidates, _identifier_texts(attributes), strict=True):
                kind.append(text)
        if not pids:
            return
        matched = np.zeros(len(pids), dtype=np.int64)
        unmatched = np.ones(len(pids), dtype=bool)
        for texts in candidates:  # a Klaviyo profile may hold more identifiers than the row sent
            hashed = text_fingerprints(texts)
            hit = unmatched & np.isin(hashed, ids)
            matched[hit] = hashed[hit]
            unmatched &= ~hit
        found = ~unmatched
        with self.lock:
            self.learnt_ids.append(matched[found])
            self.learnt_pids.append(np.array(pids, dtype="S")[found])
        if unmatched.any():
            log.warning("import job %s: %d profile(s) not matched to a sent row", job_id, int(unmatched.sum()))

    # -- at the end ----------------------------------------------------------------------------------
    def _merged(self) -> SyncState:
        """The state as the run leaves it: what it found, plus what Klaviyo accepted in this run."""
        if self._final is None:
            # The state as found becomes the result (changed in place): the run has read every row.
            final = self.state or SyncState(self.list_id)
            self.state = None
            with self.lock:
                if len(self.accepted_ids):
                    final.merge(self.accepted_ids.take(), self.accepted_prints.take())
                if self.learnt_ids:
                    final.set_profile_ids(np.concatenate(self.learnt_ids), np.concatenate(self.learnt_pids))
            if self.member_pids is not None:
                for hashed in self.member_ids:
                    final.set_profile_ids(hashed, self.member_pids)
            self._final = final
        return self._final

    def remove_departed(self) -> str | None:
        """Mirror mode: takes the profiles that left the segment off the list (never deletes or
        unsubscribes them). Returns why nothing was removed when the safety stop holds it back."""
        if not self.mirror:
            return None
        state = self._merged()
        seen = self.segment.take()
        departed = state.absent_from(seen)
        strangers = self._members_not_in_segment(state, seen)
        if not len(departed) and not len(strangers):
            return None
        options = self.options
        on_list = max(len(state), 0 if self.member_pids is None else len(self.member_pids))
        leaving = len(departed) + len(strangers)
        share = leaving / on_list
        if not options.confirm_removals:
            if not len(seen):
                return (
                    f"mirror: the segment holds no valid profile, so all {leaving:,} profiles on the list "
                    "would be removed; nothing was removed. If that is right, run again "
                    "with confirm_removals (--confirm-removals)"
                )
            if share > options.max_removal_share:
                return (
                    f"mirror: {leaving:,} of {on_list:,} profiles on the list ({share:.1%}) are not in the "
                    f"segment, more than the {options.max_removal_share:.0%} allowed; nothing was removed. If the "
                    "segment is right, run again with confirm_removals (--confirm-removals)"
                )
        pids = state.profile_ids[departed]
        removable = departed[pids != b""]
        unknown = len(departed) - len(removable)
        if unknown:
            log.warning("mirror: %d departed profile(s) have no known Klaviyo id and stay on the list", unknown)
        if len(strangers):
            known = set(state.profile_ids[removable].tolist())
            strangers = np.array([p for p in strangers.tolist() if p not in known], dtype="S")
        if self.dry_run or self.client is None:
            self.counts.removed = len(removable) + len(strangers)
            return None
        if len(strangers):
            self.client.remove_from_list(self.list_id, [p.decode() for p in strangers.tolist()], self._count_removed)
            log.info(
                "reconcile: %d member(s) not put there by this export and not in the segment removed", len(strangers)
            )
        removed_so_far = 0

        def removed(count: int) -> None:
            nonlocal removed_so_far
            self._count_removed(count)
            self._removed(state.ids[removable[removed_so_far : removed_so_far + count]])
            removed_so_far += count

        self.client.remove_from_list(self.list_id, [p.decode() for p in state.profile_ids[removable].tolist()], removed)
        log.info("mirror: %d profile(s) that left the segment were removed from list %s", len(removable), self.list_id)
        return None

    def _members_not_in_segment(self, state: SyncState, seen: np.ndarray) -> np.ndarray:
        """reconcile: profile ids of list members that are neither in the segment nor in the state
        (added by hand or by another tool)."""
        if self.member_pids is None or not len(self.member_pids):
            return np.zeros(0, dtype="S1")
        matched = np.zeros(len(self.member_pids), dtype=bool)
        for hashed in self.member_ids:
            matched |= np.isin(hashed, seen) | state.known(hashed)
        return self.member_pids[~matched]

    def _count_removed(self, count: int) -> None:
        with self.lock:
            self.counts.removed += count

    def _removed(self, ids: np.ndarray) -> None:
        assert self._final is not None
        self._final.drop(ids)

    def save(self, finished: bool) -> None:
        """Saves what Klaviyo accepted: into the state once the run is finished (whatever its
        outcome), or aside (for the run's next invocation) when its time budget ran out."""
        if not self.loaded:
            return
        if not finished:
            with self.lock:
                if not len(self.accepted_ids):
                    return
                aside = SyncState(self.list_id)
                aside.merge(self.accepted_ids.take(), self.accepted_prints.take())
                if self.learnt_ids:
                    aside.set_profile_ids(np.concatenate(self.learnt_ids), np.concatenate(self.learnt_pids))
            self.store.save(aside, self.pending_name)
            return
        self.store.save(self._merged())
        self.store.delete(self.pending_name)


def _identifier_texts(attributes: dict[str, object]) -> tuple[str, str, str]:
    """A Klaviyo profile's identifiers as identifier_text writes them (it may hold more than the row
    sent, so each is tried)."""
    return (
        str(attributes.get("email") or "").lower(),
        str(attributes.get("phone_number") or ""),
        "x:" + str(attributes.get("external_id") or ""),
    )
