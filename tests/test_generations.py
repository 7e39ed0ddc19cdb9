"""Exports edited or deleted and created again while they run (issue 18, defect 2): "unchanged" means
the segment's version and the export's definition; each export has a generation, and a run records its
outcome, and keeps its sync state, only in the generation it was started for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.control.store import EXPORTS, Store
from shared.klaviyo import KlaviyoClient
from tests.conftest import CONTRIB_HEADERS, App, member_emails
from tools.klaviyo_sim import KlaviyoSimulator


def csv(*emails: str, column: str = "email") -> bytes:
    return (f"{column},first_name\n" + "".join(f"{e},N\n" for e in emails)).encode()


def people(*numbers: int) -> list[str]:
    return [f"p{n}@example.com" for n in numbers]


def timer(app: App) -> dict[str, dict[str, Any]]:
    """Fires the timer, runs what it queued; the newest run of each export by name."""
    app.host.fire_timer()
    app.drain_queue()
    newest: dict[str, dict[str, Any]] = {}
    for export in app.services.store.list_exports():
        runs = app.services.store.runs_of(export["name"], limit=1)
        if runs:
            newest[export["name"]] = runs[0]
    return newest


def while_running(app: App, change: Callable[[], None]) -> None:
    """Makes `change` happen in the middle of the next run: after the run has read its export, before it
    sends anything (the executor opens its Klaviyo client then)."""
    make_client = app.services.klaviyo
    pending = [change]

    def client(key: str) -> KlaviyoClient:
        while pending:
            pending.pop()()
        return make_client(key)

    app.services.klaviyo = client


def runs_of(app: App, name: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, body, _ = app.http("export_runs", "GET", f"exports/{name}/runs", headers=headers, name=name)
    return status, body


# -- "unchanged" is the segment and the definition -------------------------------------------------------
def test_an_export_whose_list_changed_mid_run_is_run_again_by_the_timer(app: App, klaviyo: KlaviyoSimulator):
    list_a, list_b = klaviyo.create_list("A"), klaviyo.create_list("B")
    app.put_connection()
    app.upload("mid.csv", csv(*people(1, 2)))
    app.put_export("mid", list_a, {"blob": "mid.csv"})
    while_running(app, lambda: app.put_export("mid", list_b, {"blob": "mid.csv"}))
    app.host.fire_timer()
    app.drain_queue()

    run = timer(app)["mid"]
    assert run["status"] == "succeeded", run.get("reason")
    assert member_emails(klaviyo, list_b) == set(people(1, 2))


def test_an_edit_that_changes_nothing_sent_keeps_the_export_skipped(app: App, klaviyo: KlaviyoSimulator):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    app.upload("same.csv", csv(*people(1)))
    app.put_export("same", list_a, {"blob": "same.csv"})
    assert timer(app)["same"]["status"] == "succeeded"
    app.put_export("same", list_a, {"blob": "same.csv"}, enabled=True)  # saved again, same definition
    skipped = timer(app)["same"]
    assert skipped["status"] == "skipped" and "unchanged" in skipped["reason"]
    app.put_export("same", list_a, {"blob": "same.csv"}, mapping={"email": "email", "first_name": "first_name"})
    assert timer(app)["same"]["status"] == "succeeded", "a changed mapping is a changed export"


def test_an_export_saved_before_definitions_were_recorded_runs_once_more(app: App, klaviyo: KlaviyoSimulator):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    app.upload("old.csv", csv(*people(1)))
    app.put_export("old", list_a, {"blob": "old.csv"})
    assert timer(app)["old"]["status"] == "succeeded"
    record = app.services.store.get_export("old")
    assert record is not None
    del record["last_success_definition"]  # as an export last run before this change was stored
    app.services.store.put_export("old", record)
    assert timer(app)["old"]["status"] == "succeeded"
    assert timer(app)["old"]["status"] == "skipped"


# -- generations -------------------------------------------------------------------------------------------
def test_a_generation_is_new_for_a_new_or_recreated_export_and_kept_by_edits(app: App, klaviyo: KlaviyoSimulator):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    status, created, _ = app.put_export("gen", list_a, {"blob": "g.csv"})
    assert status == 201 and len(created["generation"]) == 32
    status, edited, _ = app.put_export("gen", list_a, {"blob": "g.csv"}, run_always=True)
    assert status == 200 and edited["generation"] == created["generation"]
    assert app.http("exports", "GET", "exports/gen", name="gen")[1]["generation"] == created["generation"]
    app.http("exports", "DELETE", "exports/gen", name="gen")
    status, again, _ = app.put_export("gen", list_a, {"blob": "g.csv"})
    assert status == 201 and again["generation"] != created["generation"]


def test_a_run_of_a_deleted_export_never_records_its_outcome_in_the_new_one(app: App, klaviyo: KlaviyoSimulator):
    list_a, list_b = klaviyo.create_list("A"), klaviyo.create_list("B")
    app.put_connection()
    app.upload("del2.csv", csv(*people(1, 2)))
    _, first, _ = app.put_export("del2", list_a, {"blob": "del2.csv"})

    def recreate() -> None:
        assert app.http("exports", "DELETE", "exports/del2", name="del2")[0] == 204
        app.put_export("del2", list_b, {"blob": "del2.csv"})

    while_running(app, recreate)
    _, old_run, _ = app.http("export_runs", "POST", "exports/del2/runs", name="del2")
    app.drain_queue()
    export = app.http("exports", "GET", "exports/del2", name="del2")[1]
    assert export["generation"] != first["generation"]
    assert export["last_success_run"] is None, "the old generation's run wrote into the new export"

    run = timer(app)["del2"]
    assert run["status"] == "succeeded" and run["export_generation"] == export["generation"]
    assert member_emails(klaviyo, list_b) == set(people(1, 2))
    _, history = runs_of(app, "del2")
    generations = {r["run_id"]: r["export_generation"] for r in history["runs"]}
    assert generations[old_run["run_id"]] == first["generation"]


def test_a_queued_run_of_a_deleted_export_executed_after_it_was_created_again(app: App, klaviyo: KlaviyoSimulator):
    list_a, list_b = klaviyo.create_list("A"), klaviyo.create_list("B")
    app.put_connection()
    app.upload("q.csv", csv(*people(1, 2)))
    app.put_export("q", list_a, {"blob": "q.csv"})
    _, old_run, _ = app.http("export_runs", "POST", "exports/q/runs", name="q")
    app.http("exports", "DELETE", "exports/q", name="q")
    _, export, _ = app.put_export("q", list_b, {"blob": "q.csv"})
    app.host.fire_timer()  # a queued run of the deleted export does not hold up the new one
    app.drain_queue()  # the old run's message, delivered only now, then the timer's
    _, old, _ = app.http("run_status", "GET", f"runs/{old_run['run_id']}", run_id=old_run["run_id"])
    assert old["status"] == "skipped" and "deleted and created again" in old["reason"]
    assert old["export_generation"] != export["generation"]
    run = app.services.store.runs_of("q", limit=1)[0]
    assert run["status"] == "succeeded" and run["trigger"] == "timer"
    assert member_emails(klaviyo, list_b) == set(people(1, 2)) and klaviyo.stats["jobs_created"] == 1
    assert app.http("exports", "GET", "exports/q", name="q")[1]["last_success_run"] == run["run_id"]


def test_a_deleted_export_keeps_its_past_runs(app: App, klaviyo: KlaviyoSimulator):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    app.upload("gone.csv", csv(*people(1)))
    _, export, _ = app.put_export("gone", list_a, {"blob": "gone.csv"})
    _, run, _ = app.http("export_runs", "POST", "exports/gone/runs", name="gone")
    app.drain_queue()
    assert app.http("exports", "DELETE", "exports/gone", name="gone")[0] == 204

    status, history = runs_of(app, "gone")
    assert status == 200 and [(r["run_id"], r["status"]) for r in history["runs"]] == [(run["run_id"], "succeeded")]
    assert history["runs"][0]["export_generation"] == export["generation"]
    assert runs_of(app, "gone", CONTRIB_HEADERS)[0] == 404, "contributors see runs of exports they may use"
    assert runs_of(app, "never")[0] == 404


# -- sync state per generation, list, connection and mapping --------------------------------------------------
def test_a_mirror_export_moved_to_another_list_starts_a_fresh_state_there(app: App, klaviyo: KlaviyoSimulator):
    list_a, list_b = klaviyo.create_list("A"), klaviyo.create_list("B")
    app.put_connection()
    app.upload("m.csv", csv(*people(*range(10))))
    app.put_export("mir", list_a, {"blob": "m.csv"}, sync_mode="mirror")
    assert timer(app)["mir"]["status"] == "succeeded"
    # Someone put a stranger on list B by hand (here: with another export).
    app.upload("hand.csv", csv("stranger@example.com"))
    app.put_export("hand", list_b, {"blob": "hand.csv"})
    app.http("export_runs", "POST", "exports/hand/runs", name="hand")
    app.drain_queue()
    app.http("exports", "DELETE", "exports/hand", name="hand")

    app.put_export("mir", list_b, {"blob": "m.csv"}, sync_mode="mirror")
    moved = timer(app)["mir"]
    assert moved["status"] == "succeeded", moved.get("reason")
    assert (moved["counts"]["sent"], moved["counts"]["unchanged"], moved["counts"]["removed"]) == (10, 0, 0)
    assert member_emails(klaviyo, list_b) == {*people(*range(10)), "stranger@example.com"}
    assert member_emails(klaviyo, list_a) == set(people(*range(10))), "list A is left as it was"


def test_a_mirror_export_whose_identifier_mapping_changed_removes_nobody(app: App, klaviyo: KlaviyoSimulator):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    rows = "email,crm_id\n" + "".join(f"p{n}@example.com,c{n}\n" for n in range(10))
    app.upload("ids.csv", rows.encode())
    app.put_export("ids", list_a, {"blob": "ids.csv"}, sync_mode="mirror")
    assert timer(app)["ids"]["status"] == "succeeded"

    # Identified by the CRM id from now on: no profile the old state knows is in the segment as it reads now.
    app.put_export("ids", list_a, {"blob": "ids.csv"}, sync_mode="mirror", mapping={"external_id": "crm_id"})
    _, run, _ = app.http("export_runs", "POST", "exports/ids/runs", name="ids")
    app.drain_queue()
    done = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])[1]
    assert done["status"] == "succeeded", done.get("reason")
    assert done["counts"]["removed"] == 0 and done["counts"]["unchanged"] == 0
    assert set(people(*range(10))) <= member_emails(klaviyo, list_a)


def test_a_recreated_mirror_export_does_not_use_the_old_ones_sync_state(app: App, klaviyo: KlaviyoSimulator):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    app.upload("r.csv", csv(*people(*range(10))))
    app.put_export("re", list_a, {"blob": "r.csv"}, sync_mode="mirror")
    assert timer(app)["re"]["status"] == "succeeded"
    app.http("exports", "DELETE", "exports/re", name="re")
    app.put_export("re", list_a, {"blob": "r.csv"}, sync_mode="mirror")
    first = timer(app)["re"]
    assert first["status"] == "succeeded"
    assert (first["counts"]["sent"], first["counts"]["unchanged"]) == (10, 0), "a new export starts a new state"


class _SavedMeanwhile:
    """The exports table, as the store sees it, with another writer saving the export right after each of
    the first reads (the real table underneath: only the interleaving is arranged)."""

    def __init__(self, table: Any, save: Callable[[], None], times: int) -> None:
        self._table, self._save, self._left = table, save, times

    def get_entity(self, *args: Any, **kwargs: Any) -> Any:
        entity = self._table.get_entity(*args, **kwargs)
        if self._left:
            self._left -= 1
            self._save()
        return entity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def _racing_store(app: App, save: Callable[[], None], times: int = 1) -> Store:
    store = Store(app.services.store._service, app.services.store._prefix)
    table = store._table(EXPORTS)
    store._tables[app.services.store._prefix + EXPORTS] = _SavedMeanwhile(table, save, times)
    return store


def test_an_outcome_is_not_merged_into_an_export_created_again_between_read_and_write(app: App):
    store = app.services.store
    store.put_export("race", {"name": "race", "list_id": "A", "generation": "g1"})

    def recreate() -> None:
        store.delete_export("race")
        store.put_export("race", {"name": "race", "list_id": "B", "generation": "g2"})

    racing = _racing_store(app, recreate)
    assert racing.update_export_of_generation("race", "g1", {"last_success_run": "r1"}) is False
    assert store.get_export("race") == {"name": "race", "list_id": "B", "generation": "g2"}


def test_an_outcome_is_merged_into_an_export_edited_between_read_and_write(app: App):
    store = app.services.store
    store.put_export("edit", {"name": "edit", "list_id": "A", "generation": "g1"})
    racing = _racing_store(app, lambda: store.put_export("edit", {"name": "edit", "list_id": "B", "generation": "g1"}))
    assert racing.update_export_of_generation("edit", "g1", {"last_success_run": "r1"}) is True
    assert store.get_export("edit") == {"name": "edit", "list_id": "B", "generation": "g1", "last_success_run": "r1"}
    assert store.update_export_of_generation("gone", "g1", {"last_success_run": "r1"}) is False
    assert store.get_export("gone") is None, "a deleted export stays deleted"


def test_an_export_saved_before_generations_keeps_its_sync_state_until_it_is_saved_again(
    app: App, klaviyo: KlaviyoSimulator
):
    list_a = klaviyo.create_list("A")
    app.put_connection()
    app.upload("l.csv", csv(*people(1, 2)))
    app.put_export("legacy", list_a, {"blob": "l.csv"})
    record = app.services.store.get_export("legacy")
    assert record is not None
    del record["generation"]  # as stored before generations existed
    app.services.store.put_export("legacy", record)
    assert app.http("exports", "GET", "exports/legacy", name="legacy")[1]["generation"] is None

    first = timer(app)["legacy"]
    assert first["status"] == "succeeded" and "export_generation" not in first
    reports = app.services.blobs.get_container_client(app.services.settings.reports_container)
    assert reports.get_blob_client("legacy/sync/sync-state.npz").exists(), "where its state always was"
    app.upload("l.csv", csv(*people(1, 2, 3)))
    assert timer(app)["legacy"]["counts"]["sent"] == 1, "the state is used as before"

    _, saved, _ = app.put_export("legacy", list_a, {"blob": "l.csv"})
    assert saved["generation"], "saving it gives it a generation"
    app.upload("l.csv", csv(*people(1, 2, 3, 4)))
    assert timer(app)["legacy"]["counts"]["sent"] == 4, "and its first run after that starts a new state"


def test_a_long_segment_version_is_kept_as_its_digest():
    from shared.control.definition import version_kept

    # A folder of 2,000 parts: its version (their etags joined) would pass a table property's 32K limit.
    folder = ",".join(f'"0x8DC{n:011X}"' for n in range(2_000))
    assert len(folder) > 32_768
    kept = version_kept(folder)
    assert kept is not None and kept.startswith("sha256:") and len(kept) == 71
    assert version_kept(folder) == kept and version_kept(folder + ",x") != kept
    assert version_kept('"0x8DC1"') == '"0x8DC1"' and version_kept(None) is None
