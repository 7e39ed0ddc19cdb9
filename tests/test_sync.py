"""Segment sync against the simulator: delta runs send only what changed, mirror mode takes those who
left the segment off the list, the safety stop, and state that stays right when runs fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shared.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from shared.engine import (
    ConfigurationError,
    Counts,
    ExportSpec,
    FileCheckpoints,
    RunReport,
    run_export,
)
from shared.engine.batching import Batcher
from shared.engine.status import COMPLETED_WITH_REJECTS, FAILED, INCOMPLETE, SUCCEEDED
from shared.klaviyo import KlaviyoClient
from shared.mapping import FieldMapping, fingerprints
from shared.sources import blob_segment
from shared.sync import FolderSyncState, SyncRun
from shared.sync.state import SyncState
from tests.conftest import API_KEY, member_emails
from tools.klaviyo_sim import KlaviyoSimulator

MAPPING = FieldMapping({"email": "email", "first_name": "first_name"})


def segment(people: dict[str, str]) -> bytes:
    return ("email,first_name\n" + "".join(f"{email},{name}\n" for email, name in people.items())).encode()


class Sync:
    """Runs one export again and again on a changing segment, with its state in a local folder."""

    def __init__(self, container, client: KlaviyoClient, list_id: str, state: Path) -> None:
        self.container, self.client, self.list_id = container, client, list_id
        self.state = FolderSyncState(state)
        self.runs = 0

    def run(
        self,
        people: dict[str, str],
        checkpoints: FileCheckpoints | None = None,
        client: KlaviyoClient | None = None,
        resume: bool = False,
        **spec: object,
    ) -> RunReport:
        if not resume:  # a resumed run reads the blob its first invocation read
            self.runs += 1
            self.container.upload_blob(f"segment-{self.runs}.csv", segment(people), overwrite=True)
        name = f"segment-{self.runs}.csv"
        return run_export(
            blob_segment(self.container, name),
            ExportSpec("sync-test", self.list_id, MAPPING, **spec),
            client or self.client,
            checkpoints=checkpoints,
            sync_state=self.state,
        )


@pytest.fixture
def sync(container, client, list_id, tmp_path) -> Sync:
    return Sync(container, client, list_id, tmp_path / "state")


def people(*numbers: int, name: str = "Ann") -> dict[str, str]:
    return {f"p{n}@example.com": name for n in numbers}


def names_on_list(klaviyo: KlaviyoSimulator, list_id: str) -> dict[str, str]:
    return {m["email"]: m.get("first_name") for m in klaviyo.list_members(list_id)}


def imports_sent(klaviyo: KlaviyoSimulator) -> int:
    return sum(n for k, n in klaviyo.stats["requests_by_endpoint"].items() if k.startswith("POST /api/profile-bulk"))


# -- fingerprints and the state blob ------------------------------------------------------------------
def test_fingerprints_are_stable_and_tell_every_byte_apart():
    values = [b"", b"a", b"a\0", b"ab", b"ba", b"x" * 8, b"x" * 9, b'{"email":"ann@example.com"},']
    hashed = fingerprints(pa.array(values, pa.binary()))
    assert len(set(hashed.tolist())) == len(values)
    # The same value hashes the same wherever it sits in an array (slices, strings, other neighbours).
    again = fingerprints(pa.array(["zzz", *[v.decode() for v in values[1:]]], pa.string()))
    assert (again[1:] == hashed[1:]).all()
    assert (fingerprints(pa.array(values, pa.binary()).slice(3, 4)) == hashed[3:7]).all()


def test_state_round_trips_and_newest_fingerprint_wins(tmp_path):
    state = SyncState("L1")
    ids = np.array([5, 3, 9], dtype=np.int64)
    state.merge(ids, np.array([50, 30, 90], dtype=np.int64))
    state.set_profile_ids(np.array([3], dtype=np.int64), np.array([b"01PROFILE3"]))
    state.merge(np.array([9, 1], dtype=np.int64), np.array([91, 10], dtype=np.int64))
    store = FolderSyncState(tmp_path)
    store.save(state)
    loaded = store.load()
    assert loaded is not None and loaded.list_id == "L1"
    assert loaded.ids.tolist() == [1, 3, 5, 9] and loaded.fingerprints.tolist() == [10, 30, 50, 91]
    assert loaded.profile_ids.tolist() == [b"", b"01PROFILE3", b"", b""]
    assert loaded.unchanged(np.array([3, 9, 7]), np.array([30, 90, 0])).tolist() == [True, False, False]


# -- delta runs -------------------------------------------------------------------------------------------
def test_an_unchanged_segment_sends_nothing_the_second_time(sync, klaviyo, list_id):
    first = sync.run(people(1, 2, 3))
    assert first.status == SUCCEEDED and first.counts.sent == 3 and first.counts.added == 3
    before = imports_sent(klaviyo)
    second = sync.run(people(1, 2, 3))
    assert second.status == SUCCEEDED
    assert second.counts.sent == 0 and second.counts.unchanged == 3 and second.job_ids == []
    assert second.counts.unaccounted == 0
    assert imports_sent(klaviyo) == before
    assert member_emails(klaviyo, list_id) == set(people(1, 2, 3))


def test_full_sends_everything_whatever_the_state(sync, klaviyo):
    sync.run(people(1, 2))
    again = sync.run(people(1, 2), full=True)
    assert again.counts.sent == 2 and again.counts.unchanged == 0 and again.counts.updated == 2


def test_a_profile_that_failed_inside_klaviyo_is_sent_again_next_run(sync, klaviyo, list_id):
    klaviyo.configure(profile_failure_rate=0.5, seed=7)
    first = sync.run(people(*range(40)))
    assert first.status == COMPLETED_WITH_REJECTS and 0 < first.counts.failed < 40
    klaviyo.configure(profile_failure_rate=0.0)
    second = sync.run(people(*range(40)))
    # Exactly the ones Klaviyo did not import go again; the state kept only what it accepted.
    assert second.counts.sent == first.counts.failed and second.counts.unchanged == first.counts.accepted
    assert member_emails(klaviyo, list_id) == set(people(*range(40)))


def test_a_run_that_fails_leaves_the_next_delta_run_sending_what_it_did_not(sync, klaviyo, list_id):
    sync.run(people(1, 2))
    klaviyo.configure(error_rate=1.0)
    impatient = KlaviyoClient(API_KEY, klaviyo.url, timeout=(2.0, 10.0), max_retries=0)
    broken = sync.run(people(1, 2, 3, 4), client=impatient)
    assert broken.status == FAILED and broken.counts.accepted == 0
    klaviyo.configure(error_rate=0.0)
    healed = sync.run(people(1, 2, 3, 4))
    assert healed.status == SUCCEEDED and healed.counts.sent == 2 and healed.counts.unchanged == 2
    assert member_emails(klaviyo, list_id) == set(people(1, 2, 3, 4))


def test_a_run_stopped_half_way_and_resumed_leaves_a_complete_state(sync, klaviyo, list_id, tmp_path):
    everyone = people(*range(25_000))  # three import jobs, sent before the time budget stops the run
    checkpoint = FileCheckpoints(tmp_path / "checkpoint.json")
    first = sync.run(everyone, checkpoints=checkpoint, deadline=0.0)
    assert first.status == INCOMPLETE and first.counts.sent > 0
    saved = checkpoint.load()
    assert saved is not None
    resumed = sync.run(everyone, checkpoints=checkpoint, run_id=saved.run_id, resume=True)
    assert resumed.status == SUCCEEDED and resumed.counts.accepted == 25_000
    assert len(member_emails(klaviyo, list_id)) == 25_000
    after = sync.run(everyone)
    assert after.counts.sent == 0 and after.counts.unchanged == 25_000


# -- three runs: joining, leaving, changing -----------------------------------------------------------------
SEGMENTS = [
    {**people(1, 2, 3, 4, 5)},
    {**people(1, 3, 4, 5), "p2@example.com": "Bea", **people(6)},  # 2 changes, 6 joins
    {**people(1, 2, 3, 4, 6), "p7@example.com": "Cy"},  # 5 leaves, 2 back to Ann, 7 joins
]


@pytest.mark.parametrize("mode", ["add", "mirror"])
def test_three_runs_keep_the_list_right(sync, klaviyo, list_id, mode):
    union: dict[str, str] = {}
    sent = []
    for number, wanted in enumerate(SEGMENTS):
        report = sync.run(wanted, mode=mode)
        assert report.status == SUCCEEDED, report.error
        union.update(wanted)
        sent.append(report.counts.sent)
        expected = wanted if mode == "mirror" else union
        assert names_on_list(klaviyo, list_id) == expected, f"after run {number + 1}"
    assert sent == [5, 2, 2]
    if mode == "mirror":
        assert report.counts.removed == 1


# -- mirror: the safety stop ------------------------------------------------------------------------------
def test_a_truncated_segment_removes_nothing_until_confirmed(sync, klaviyo, list_id):
    sync.run(people(*range(10)), mode="mirror")
    stopped = sync.run(people(0, 1), mode="mirror")
    assert stopped.status == FAILED and "8 of 10" in (stopped.error or "") and stopped.counts.removed == 0
    assert member_emails(klaviyo, list_id) == set(people(*range(10)))
    confirmed = sync.run(people(0, 1), mode="mirror", confirm_removals=True)
    assert confirmed.status == SUCCEEDED and confirmed.counts.removed == 8
    assert member_emails(klaviyo, list_id) == set(people(0, 1))


def test_removals_of_more_than_one_call_leave_exactly_the_departed_out_of_the_state(sync, klaviyo, list_id):
    # Klaviyo takes 1,000 removals a call, and each call's profiles leave the state as it succeeds.
    sync.run(people(*range(2500)), mode="mirror")
    removed = sync.run(people(*range(2000, 2500)), mode="mirror", confirm_removals=True)
    assert removed.status == SUCCEEDED and removed.counts.removed == 2000
    again = sync.run(people(*range(2000, 2500)), mode="mirror")
    assert again.counts.sent == 0 and again.counts.removed == 0, "the state holds exactly the segment"
    assert member_emails(klaviyo, list_id) == set(people(*range(2000, 2500)))


def test_an_empty_segment_removes_nothing(sync, klaviyo, list_id):
    sync.run(people(1), mode="mirror")
    empty = sync.run({}, mode="mirror", max_removal_share=1.0)
    assert empty.status == FAILED and "no valid profile" in (empty.error or "")
    assert member_emails(klaviyo, list_id) == set(people(1))


def test_dry_run_counts_what_would_be_added_updated_and_removed(sync, klaviyo, list_id):
    sync.run(people(*range(10)), mode="mirror")
    before = klaviyo.stats["requests"]
    preview = sync.run({**people(*range(1, 10)), "p1@example.com": "Bo", **people(20, 21)}, mode="mirror", dry_run=True)
    assert preview.status == SUCCEEDED
    c = preview.counts
    assert (c.added, c.updated, c.removed, c.unchanged) == (2, 1, 1, 8)
    assert klaviyo.stats["requests"] == before  # a dry run does not call Klaviyo
    assert member_emails(klaviyo, list_id) == set(people(*range(10)))


def test_mirror_needs_a_state(container, client, list_id):
    container.upload_blob("s.csv", segment(people(1)))
    with pytest.raises(ConfigurationError):
        run_export(blob_segment(container, "s.csv"), ExportSpec("x", list_id, MAPPING, mode="mirror"), client)


# -- the command line -----------------------------------------------------------------------------------
@pytest.fixture
def cli_env(monkeypatch, klaviyo: KlaviyoSimulator, azurite) -> None:
    monkeypatch.setenv("KLAVIYO_BASE_URL", klaviyo.url)
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)


def cli_run(tmp_path: Path, list_id: str, members: dict[str, str], *extra: str) -> int:
    path = tmp_path / "segment.csv"
    path.write_bytes(segment(members))
    return main(["run", str(path), "--list-id", list_id, "--map", "first_name=first_name", "--no-progress", *extra])


@pytest.mark.parametrize("where", ["folder", "blob"])
def test_cli_mirror_with_state_in_a_folder_or_blob(cli_env, tmp_path, klaviyo, list_id, container, capsys, where):
    state = str(tmp_path / "state") if where == "folder" else f"{container.container_name}/sync/cli"
    assert cli_run(tmp_path, list_id, people(*range(10)), "--mode", "mirror", "--state", state) == EXIT_OK
    assert cli_run(tmp_path, list_id, people(*range(1, 10)), "--mode", "mirror", "--state", state) == EXIT_OK
    out = capsys.readouterr().out
    assert "unchanged   9 " in out and "removed     1 removed" in out
    assert member_emails(klaviyo, list_id) == set(people(*range(1, 10)))
    if where == "blob":
        # The state, and the identifiers of the profiles on the list; no run's sending log is left.
        names = [b.name for b in container.list_blobs(name_starts_with="sync/cli/")]
        assert names == ["sync/cli/identifiers.arrow", "sync/cli/sync-state.npz"]
    # The safety stop fails the run (exit 1) and names the override; the override removes.
    assert cli_run(tmp_path, list_id, people(1), "--mode", "mirror", "--state", state) == EXIT_FAILED
    assert "--confirm-removals" in capsys.readouterr().out
    assert len(member_emails(klaviyo, list_id)) == 9
    assert cli_run(tmp_path, list_id, people(1), "--mode", "mirror", "--state", state, "--confirm-removals") == EXIT_OK
    assert member_emails(klaviyo, list_id) == set(people(1))


def test_cli_mirror_without_state_is_a_usage_error(cli_env, tmp_path, list_id, capsys):
    assert cli_run(tmp_path, list_id, people(1), "--mode", "mirror") == EXIT_USAGE
    assert "--state" in capsys.readouterr().err


# -- reconcile: the list as Klaviyo has it ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["add", "mirror"])
def test_reconcile_resends_what_was_taken_off_and_in_mirror_removes_strangers(sync, klaviyo, list_id, mode):
    sync.run(people(*range(10)), mode=mode)
    # By hand: one profile taken off the list, one stranger put on it.
    ids = {attributes["email"]: pid for pid, attributes in sync.client.list_member_ids(list_id)}
    sync.client.remove_from_list(list_id, [ids["p3@example.com"]])
    stranger = Sync(sync.container, sync.client, list_id, Path(sync.state.folder).with_name("other"))
    stranger.run({"stranger@example.com": "Sam"})
    assert len(member_emails(klaviyo, list_id)) == 10

    plain = sync.run(people(*range(10)), mode=mode)
    assert plain.counts.sent == 0, "without reconcile the run trusts its state"
    fixed = sync.run(people(*range(10)), mode=mode, reconcile=True)
    assert fixed.status == SUCCEEDED and fixed.list_members == 10
    assert fixed.counts.sent == 1 and fixed.counts.unchanged == 9
    expected = set(people(*range(10))) | ({"stranger@example.com"} if mode == "add" else set())
    assert member_emails(klaviyo, list_id) == expected
    assert fixed.counts.removed == (1 if mode == "mirror" else 0)


def test_what_an_interrupted_invocation_accepted_reaches_the_state_at_the_runs_end(tmp_path):
    """A run stopped by its time budget keeps what Klaviyo accepted aside, not in the state (its next
    invocation must filter as the first did), and the state gets it when the run ends."""
    store = FolderSyncState(tmp_path)
    spec = ExportSpec("x", "L1", MAPPING, run_id="r1")
    bodies = pa.array([b'{"a":1},', b'{"a":2},', b'{"a":3},'], pa.binary())
    ids, prints = fingerprints(pa.array(["a", "b", "c"])), fingerprints(bodies)
    batcher = Batcher("L1")
    batcher.add_many(bodies, np.arange(3), np.arange(3), ids, prints)
    batch = batcher.flush()
    assert batch is not None

    first = SyncRun(store, spec.sync, "L1", "r1", Counts(), None)
    first.load(resumed=False)
    first.accepted("job-1", *batch.fingerprints_except([1]))
    first.save(finished=False)
    assert store.load() is None, "the state waits for the run's end"

    last = SyncRun(store, spec.sync, "L1", "r1", Counts(), None)
    last.load(resumed=True)
    last.save(finished=True)
    state = store.load()
    assert state is not None and sorted(state.ids.tolist()) == sorted([ids[0], ids[2]])
    assert state.unchanged(ids, prints).tolist() == [True, False, True]
    assert not (tmp_path / "run-r1.npz").exists()


def test_an_add_export_switched_to_mirror_records_identifiers_then_removes(sync, klaviyo, list_id):
    sync.run(people(*range(10)), mode="add")  # add mode keeps no identifiers
    switched = sync.run(people(*range(10)), mode="mirror")
    assert switched.counts.sent == 10 and switched.counts.updated == 10, "sent again to record their identifiers"
    settled = sync.run(people(*range(1, 10)), mode="mirror")
    assert settled.counts.sent == 0 and settled.counts.removed == 1
    assert member_emails(klaviyo, list_id) == set(people(*range(1, 10)))


def test_mirror_with_reconcile_keeps_the_members_profile_ids(sync, klaviyo, list_id, container):
    # The list already holds the segment (an earlier tool, or runs without a state).
    container.upload_blob("before.csv", segment(people(*range(10))))
    run_export(blob_segment(container, "before.csv"), ExportSpec("x", list_id, MAPPING), sync.client)
    first = sync.run(people(*range(10)), mode="mirror", reconcile=True)
    assert first.status == SUCCEEDED and first.list_members == 10 and first.counts.sent == 10
    job_reads = "GET /api/profile-bulk-import-jobs/{id}/profiles"
    assert klaviyo.stats["requests_by_endpoint"].get(job_reads, 0) == 0, "the ids came with the members"
    settled = sync.run(people(*range(1, 10)), mode="mirror")
    assert settled.counts.sent == 0 and settled.counts.removed == 1
    assert member_emails(klaviyo, list_id) == set(people(*range(1, 10)))
