from __future__ import annotations

from pathlib import Path

from edgepack.records import RecordKey, Records


def key(sha: str = "a" * 64, threads: int = 1) -> RecordKey:
    return RecordKey(sha, "rpi4@SHA256:xyz", "tflite", threads, "1")


def test_records_persist_and_are_keyed_by_everything(tmp_path: Path):
    records = Records(tmp_path)
    records.add(key(), {"latency_ms": {"p50": 1.5}})
    assert records.get(key()) == {"latency_ms": {"p50": 1.5}}
    assert records.get(key(threads=4)) is None
    assert records.get(RecordKey("a" * 64, "rpi4@SHA256:other", "tflite", 1, "1")) is None
    reopened = Records(tmp_path)
    assert reopened.get(key()) == {"latency_ms": {"p50": 1.5}} and len(reopened) == 1


def test_a_torn_last_line_is_skipped(tmp_path: Path):
    records = Records(tmp_path)
    records.add(key("b" * 64), {"p50": 2})
    with records.path.open("a") as fh:
        fh.write('{"key": {"artifact_sha256": "c')  # a crash mid-write
    reopened = Records(tmp_path)
    assert len(reopened) == 1 and reopened.get(key("b" * 64)) == {"p50": 2}
    reopened.add(key("d" * 64), {"p50": 3})  # appending after a torn line still works
    assert Records(tmp_path).get(key("d" * 64)) == {"p50": 3}
