"""One run's part in a segment sync: the delta filter, what Klaviyo accepted, profile ids, and (mirror
mode) taking the profiles that left the segment off the list, with its safety stop."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shared.klaviyo import MAX_LIST_RELATIONSHIP_IDS, KlaviyoClient
from shared.report import Counts
from shared.sync_state import SyncState, SyncStateStore, fingerprints, text_fingerprints

if TYPE_CHECKING:
    from shared.batching import Batch
    from shared.exporter import ExportSpec

log = logging.getLogger(__name__)

_EMPTY_IDS = np.zeros(0, dtype=np.int64)


class SyncRun:
    def __init__(self, store: SyncStateStore, spec: ExportSpec, counts: Counts, client: KlaviyoClient | None) -> None:
        self.store, self.spec, self.counts, self.client = store, spec, counts, client
        self.mirror = spec.mode == "mirror"
        self.state: SyncState | None = None  # as the run found it: the delta filter for all its invocations
        self.loaded = False
        self.lock = threading.Lock()
        self.accepted_ids: list[np.ndarray] = []
        self.accepted_prints: list[np.ndarray] = []
        self.learnt_ids: list[np.ndarray] = []  # identifier fingerprints whose Klaviyo profile id was read
        self.learnt_pids: list[np.ndarray] = []
        self.segment: list[np.ndarray] = []  # identifier fingerprints of every valid profile read
        self.pending_name = f"run-{spec.run_id}.npz"
        self._final: SyncState | None = None

    # -- before and while sending ------------------------------------------------------------------
    def load(self, resumed: bool) -> None:
        state = self.store.load()
        if state is not None and state.list_id != self.spec.list_id:
            log.warning("sync state in %s is for another list; this run starts a new one", self.store.location)
            state = None
        self.state = state
        if resumed and (pending := self.store.load(self.pending_name)) is not None:
            self.accepted_ids.append(pending.ids)
            self.accepted_prints.append(pending.fingerprints)
            known = pending.profile_ids != b""
            self.learnt_ids.append(pending.ids[known])
            self.learnt_pids.append(pending.profile_ids[known])
        self.loaded = True

    def changed(
        self, identifiers: pa.Array | None, bodies: pa.BinaryArray
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Fingerprints a chunk's profiles and counts them against the state; returns a mask of
        those to send (None: all of them), their identifier and profile fingerprints."""
        if identifiers is None:
            raise ValueError("a sync run needs the mapper's identifier texts")
        ids, prints = fingerprints(identifiers), fingerprints(bodies)
        self.segment.append(ids)
        state, counts = self.state, self.counts
        if state is None or not len(state):
            counts.added += len(ids)
            return None, ids, prints
        at, found = state.find(ids)
        same = found & (state.fingerprints[at] == prints)
        if self.mirror:  # without its profile id a profile could never be removed: send it to learn it
            same &= state.profile_ids[at] != b""
        counts.added += int((~found).sum())
        if self.spec.full:  # every profile already on the list is sent again, as an update
            counts.updated += int(found.sum())
            return None, ids, prints
        counts.updated += int((found & ~same).sum())
        if not same.any():
            return None, ids, prints
        counts.unchanged += int(same.sum())
        return ~same, ids, prints

    def accepted(self, job_id: str, batch: Batch, failed_positions: list[int]) -> None:
        """A finished job's profiles that Klaviyo imported (all but the failed positions)."""
        keep = np.ones(len(batch), dtype=bool)
        keep[failed_positions] = False
        ids = np.frombuffer(batch.ids, dtype=np.int64)[keep].copy()
        prints = np.frombuffer(batch.fingerprints, dtype=np.int64)[keep].copy()
        with self.lock:
            self.accepted_ids.append(ids)
            self.accepted_prints.append(prints)
        if self.mirror and self.client is not None:
            self._learn_profile_ids(job_id, ids)

    def _learn_profile_ids(self, job_id: str, ids: np.ndarray) -> None:
        """Reads the job's profiles (100 a call) for the Klaviyo ids of profiles not known yet."""
        assert self.client is not None
        state = self.state
        if state is not None and len(state):
            at, found = state.find(ids)
            if (found & (state.profile_ids[at] != b"")).all():
                return
        pids: list[str] = []
        candidates: list[list[str]] = [[], [], []]
        for pid, attributes in self.client.import_job_profiles(job_id):
            pids.append(pid)
            candidates[0].append(str(attributes.get("email") or "").lower())
            candidates[1].append(str(attributes.get("phone_number") or ""))
            candidates[2].append("x:" + str(attributes.get("external_id") or ""))
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
            base = self.state or SyncState(self.spec.list_id)
            final = SyncState(base.list_id, base.ids, base.fingerprints, base.profile_ids)
            with self.lock:
                if self.accepted_ids:
                    final.merge(np.concatenate(self.accepted_ids), np.concatenate(self.accepted_prints))
                if self.learnt_ids:
                    final.set_profile_ids(np.concatenate(self.learnt_ids), np.concatenate(self.learnt_pids))
            self._final = final
        return self._final

    def remove_departed(self) -> str | None:
        """Mirror mode: takes the profiles that left the segment off the list (never deletes or
        unsubscribes them). Returns why nothing was removed when the safety stop holds it back."""
        if not self.mirror:
            return None
        state = self._merged()
        seen = np.concatenate(self.segment) if self.segment else _EMPTY_IDS
        departed = state.absent_from(seen)
        if not len(departed):
            return None
        spec = self.spec
        share = len(departed) / len(state)
        if not spec.confirm_removals:
            if not len(seen):
                return (
                    f"mirror: the segment holds no valid profile, so all {len(departed):,} profiles this export "
                    "put on the list would be removed; nothing was removed. If that is right, run again "
                    "with confirm_removals (--confirm-removals)"
                )
            if share > spec.max_removal_share:
                return (
                    f"mirror: {len(departed):,} of {len(state):,} profiles on the list ({share:.1%}) left the "
                    f"segment, more than the {spec.max_removal_share:.0%} allowed; nothing was removed. If the "
                    "segment is right, run again with confirm_removals (--confirm-removals)"
                )
        pids = state.profile_ids[departed]
        removable = departed[pids != b""]
        unknown = len(departed) - len(removable)
        if unknown:
            log.warning("mirror: %d departed profile(s) have no known Klaviyo id and stay on the list", unknown)
        if spec.dry_run or self.client is None:
            self.counts.removed = len(removable)
            return None
        for start in range(0, len(removable), MAX_LIST_RELATIONSHIP_IDS):
            chunk = removable[start : start + MAX_LIST_RELATIONSHIP_IDS]
            self.client.remove_from_list(spec.list_id, [p.decode() for p in state.profile_ids[chunk]])
            with self.lock:
                self.counts.removed += len(chunk)
            self._removed(state.ids[chunk])
        log.info("mirror: %d profile(s) that left the segment were removed from list %s", len(removable), spec.list_id)
        return None

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
                if not self.accepted_ids:
                    return
                aside = SyncState(self.spec.list_id)
                aside.merge(np.concatenate(self.accepted_ids), np.concatenate(self.accepted_prints))
                if self.learnt_ids:
                    aside.set_profile_ids(np.concatenate(self.learnt_ids), np.concatenate(self.learnt_pids))
            self.store.save(aside, self.pending_name)
            return
        self.store.save(self._merged())
        self.store.delete(self.pending_name)
