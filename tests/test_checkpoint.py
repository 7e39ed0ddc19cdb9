"""The checkpoint's JSON on disk keeps its shape: a checkpoint saved by an earlier version of the engine
(records as plain objects, reject lines as arrays of six values) loads into the typed records and is
written back byte for byte."""

from shared.engine.checkpoint import BatchRecord, Checkpoint, FinishedJob
from shared.engine.report import RejectLine

SAVED = (
    b'{"run_id":"run1","source_version":"v1",'
    b'"batches":{"2:10001":{"jobs":["j1","j2"],"sent":9998,'
    b'"rejects":[["a.csv",5,"b***@e***","rejected","","Klaviyo refused the profile: bad"]]},'
    b'"1099511627778:1099511637777":{"jobs":["j3"],"sent":10000,"rejects":[]}},'
    b'"finished_jobs":{"j1":{"accepted":4000,"failed":1,'
    b'"rejects":[["a.csv",7,"c***@e***","failed","","Klaviyo could not import the profile: x"]]},'
    b'"j3":{"accepted":10000,"failed":0,"rejects":[]}},'
    b'"flush_points":[10001],"invocations":2}'
)


def test_a_saved_checkpoint_loads_into_typed_records_and_is_written_back_the_same():
    checkpoint = Checkpoint.from_json(SAVED)
    assert checkpoint.batches["2:10001"] == BatchRecord(
        ["j1", "j2"], 9998, [RejectLine("a.csv", 5, "b***@e***", "rejected", "", "Klaviyo refused the profile: bad")]
    )
    assert checkpoint.finished_jobs["j3"] == FinishedJob(10000, 0, [])
    assert checkpoint.finished_jobs["j1"].rejects[0].outcome == "failed"
    assert checkpoint.pending_jobs == ["j2"]
    assert (checkpoint.flush_points, checkpoint.invocations) == ([10001], 2)
    assert checkpoint.to_json() == SAVED
