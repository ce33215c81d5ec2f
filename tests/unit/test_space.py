from __future__ import annotations

from edgepack.profiles import ProfileRegistry
from edgepack.search.space import Constraints, plans_for, thread_counts


def test_plans_follow_the_profile():
    registry = ProfileRegistry.discover()
    coral = plans_for(registry.get("coral-edgetpu"))
    assert coral and {p.precision for p in coral} == {"int8"} and {p.format for p in coral} == {"tflite"}
    rpi4 = plans_for(registry.get("rpi4"))
    assert {p.format for p in rpi4} == {"tflite", "onnx"}
    assert {p.threads for p in rpi4} == {1, 2, 4}
    assert not any(p.format == "onnx" and p.precision == "fp16" for p in rpi4)
    assert len({p.key for p in rpi4}) == len(rpi4)  # keys are unique and stable
    assert any(p.is_baseline for p in rpi4)


def test_thread_counts():
    assert thread_counts(1) == [1] and thread_counts(4) == [1, 2, 4] and thread_counts(6) == [1, 2, 4, 6]


def test_constraints_say_what_blocks():
    c = Constraints(max_size_mb=1.0, max_latency_ms=5.0, max_accuracy_drop=1.0)
    assert c.violations(0.5, None, 4.0, 0.2) == []
    assert c.violations(2.0, None, 6.0, 3.0) == ["size 2.00 MB > 1 MB", "p50 6.000 ms > 5 ms",
                                                 "accuracy drop 3.00 > 1 points"]


def test_the_source_as_given_is_a_plan_when_the_device_runs_its_format_and_precision():
    registry = ProfileRegistry.discover()
    stm32 = registry.get("stm32h7")
    plans = plans_for(stm32, (0.0, 0.5), source=("tflite", "int8"))
    given = [p for p in plans if p.as_given]
    assert plans[0] is given[0] and [p.label for p in given] == ["tflite int8 as given x1"]
    assert given[0].is_baseline and given[0].artifact == ("tflite", "as given", 0.0)
    assert ("tflite", "int8", 0.0) in {p.artifact for p in plans}  # re-quantizing it is still tried, apart
    assert not [p for p in plans_for(stm32, (0.0,), source=("tflite", "fp32")) if p.as_given]  # int8 only
    assert not [p for p in plans_for(stm32, (0.0,), source=("onnx", "int8")) if p.as_given]  # no ONNX runtime
    rpi4 = registry.get("rpi4")
    given = [p for p in plans_for(rpi4, (0.0,), source=("onnx", "dynamic")) if p.as_given]
    assert [p.label for p in given] == [f"onnx dynamic as given x{t}" for t in (1, 2, 4)]
    assert not [p for p in plans_for(rpi4, (0.0,), precisions=["int8"], source=("onnx", "dynamic")) if p.as_given]
    # an fp32 source needs no plan of its own: the unpruned fp32 plan of its format is that file; keys unchanged
    assert [p.key for p in plans_for(rpi4, (0.0,), source=("onnx", "fp32"))] == [p.key for p in plans_for(rpi4, (0.0,))]
