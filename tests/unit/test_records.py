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


def test_foreign_and_damaged_lines_are_skipped_and_counted(tmp_path: Path):
    """Fault probe 8: a record from another version, a key that is not a key, a line that is not UTF-8:
    each made every build on the cache fail; now each is skipped and counted like a torn line."""
    records = Records(tmp_path)
    records.add(key("b" * 64), {"p50": 2})
    good = records.path.read_bytes()
    with records.path.open("ab") as fh:
        fh.write(b'{"key": {"artifact_sha256": "c", "device": "d", "runtime": "r", "threads": 1, '
                 b'"harness_version": "1", "repeat": 0, "purpose": "latency", "board_temp": 1}, '
                 b'"result": {}}\n')  # a newer version's field
        fh.write(b'{"key": {"artifact_sha256": "c"}, "result": {}}\n')  # a field missing
        fh.write(b'{"key": 5}\n')
        fh.write(b'{"key": {"artifact_sha256": "c", "device": "d", "runtime": "r", "threads": "one", '
                 b'"harness_version": "1", "repeat": 0}, "result": {}}\n')  # a field of another type
        fh.write(b"\xff\xfe not utf-8 \x80\n")
        fh.write(b"[1, 2]\n")
    reopened = Records(tmp_path)
    assert reopened.skipped == 6 and len(reopened) == 1 and reopened.get(key("b" * 64)) == {"p50": 2}
    reopened.add(key("d" * 64), {"p50": 3})
    assert Records(tmp_path).get(key("d" * 64)) == {"p50": 3}
    assert records.path.read_bytes().startswith(good)  # nothing was rewritten
