"""Klaviyo profile ids learnt from a run's import jobs: mirror mode needs a profile's id to take the
profile off the list once it leaves the segment."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from shared.klaviyo import KlaviyoClient
from shared.sync.members import identified_profiles

log = logging.getLogger(__name__)


class LearntProfileIds(NamedTuple):
    """Identifier fingerprints of rows sent, and the Klaviyo profile id (bytes) of each."""

    ids: np.ndarray
    profile_ids: np.ndarray


def job_profile_ids(client: KlaviyoClient, job_id: str, ids: np.ndarray) -> LearntProfileIds | None:
    """Reads the profiles an import job imported (100 a call) and matches each with a row it was
    sent (`ids`: their identifier fingerprints). None when the job names no profile."""
    profiles = identified_profiles(client.import_job_profiles(job_id))
    if not profiles.profile_ids:
        return None
    matched = np.zeros(len(profiles.profile_ids), dtype=np.int64)
    unmatched = np.ones(len(profiles.profile_ids), dtype=bool)
    for hashed in profiles.ids:  # a Klaviyo profile may hold more identifiers than the row sent
        hit = unmatched & np.isin(hashed, ids)
        matched[hit] = hashed[hit]
        unmatched &= ~hit
    if unmatched.any():
        log.warning("import job %s: %d profile(s) not matched to a sent row", job_id, int(unmatched.sum()))
    found = ~unmatched
    return LearntProfileIds(matched[found], np.array(profiles.profile_ids, dtype="S")[found])
