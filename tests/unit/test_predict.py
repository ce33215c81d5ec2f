from __future__ import annotations

from edgepack.analysis.kernels import KernelGroup
from edgepack.predict import PRIOR_EFFICIENCY, Features, Predictor

# a made-up board: ms per roofline-ms of each kind of kernel, per precision; 0.01 ms per kernel; 0.05 ms a call
SPEED = {("conv", "fp32"): 3.0, ("depthwise", "fp32"): 9.0, ("elementwise", "fp32"): 5.0,
         ("conv", "int8"): 1.5, ("depthwise", "int8"): 12.0, ("elementwise", "int8"): 5.0, ("quant", "int8"): 6.0}


def model(conv: float, depthwise: float, elementwise: float, precision: str = "fp32", fmt: str = "onnx",
          threads: int = 1, quant: float = 0.0) -> Features:
    groups = [KernelGroup("conv", precision, 20, int(conv * 1e6), 0, conv),
              KernelGroup("depthwise", precision, 10, int(depthwise * 1e5), 0, depthwise),
              KernelGroup("elementwise", "fp32" if precision == "fp32" else precision, 15, 0, 0, elementwise)]
    if quant:
        groups.append(KernelGroup("quant", precision, 8, 0, 0, quant))
    return Features(conv + depthwise + elementwise + quant, sum(g.count for g in groups), precision, 1000, 1000,
                    fmt, threads, precision, kernels=tuple(groups))


def board(f: Features) -> float:
    return 0.05 + sum(SPEED[(g.kind, g.precision)] * g.cost_ms + 0.01 * g.count for g in f.groups)


def test_before_any_measurement_the_prior_is_the_roofline_over_an_efficiency_and_uncertain():
    f = model(1.0, 0.2, 0.1)
    prediction = Predictor().predict(f)
    assert prediction.ms > f.roofline_ms / PRIOR_EFFICIENCY
    assert prediction.sigma > 1.0


def test_a_whole_model_measurement_rescales_every_kernel_and_narrows_the_uncertainty():
    predictor = Predictor()
    baseline = model(1.0, 0.2, 0.1)
    before = predictor.predict(model(0.5, 0.1, 0.1)).sigma
    predictor.observe(baseline, board(baseline))
    assert abs(predictor.latency_ms(baseline) / board(baseline) - 1) < 0.05
    after = predictor.predict(model(0.5, 0.1, 0.1))
    assert after.sigma < before / 3
    # an unmeasured runtime stays uncertain: the search knows to look there
    assert predictor.predict(model(1.0, 0.2, 0.1, fmt="tflite")).sigma > 2 * after.sigma


def test_per_kernel_coefficients_predict_a_new_mix_of_kernels():
    """Pruning shrinks convolutions more than depthwise ones: measured mixes teach each kind's speed."""
    predictor = Predictor()
    for conv, dw, ew in [(1.0, 0.2, 0.1), (0.5, 0.14, 0.07), (0.25, 0.1, 0.05), (2.0, 0.1, 0.3), (0.3, 0.6, 0.2)]:
        f = model(conv, dw, ew)
        predictor.observe(f, board(f))
    probe = model(0.1, 0.35, 0.02)
    assert abs(predictor.latency_ms(probe) / board(probe) - 1) < 0.1


def test_an_op_profile_pins_each_kind_from_one_run():
    """One fp32 run with its per-op profile: the pruned twin (its convolutions shrink) is predicted
    from each kind's own time, not from the model's total."""
    predictor = Predictor()
    baseline = model(1.0, 0.4, 0.3)
    predictor.observe(baseline, board(baseline))
    ops = [("FusedConv", SPEED[("conv", "fp32")] * 0.6 + 0.2), ("Conv", SPEED[("depthwise", "fp32")] * 0.4 + 0.1),
           ("Add", SPEED[("elementwise", "fp32")] * 0.3 + 0.15), ("Conv", SPEED[("conv", "fp32")] * 0.4)]
    predictor.observe_ops(baseline, board(baseline), ops)
    pruned = model(0.25, 0.2, 0.15)
    without = Predictor()
    without.observe(baseline, board(baseline))
    error = abs(predictor.latency_ms(pruned) / board(pruned) - 1)
    assert error < abs(without.latency_ms(pruned) / board(pruned) - 1)
    assert error < 0.15


def test_int8_learns_its_own_kernels_and_the_quantize_ops_around_floats():
    predictor = Predictor()
    for scale in (1.0, 0.5, 0.3):
        for precision, quant in (("fp32", 0.0), ("int8", 0.2 * scale)):
            f = model(scale, 0.2 * scale, 0.1, precision, quant=quant)
            predictor.observe(f, board(f))
    probe = model(0.7, 0.1, 0.1, "int8", quant=0.15)
    assert abs(predictor.latency_ms(probe) / board(probe) - 1) < 0.1


def test_history_from_an_earlier_build_on_the_board_starts_the_fit():
    earlier = Predictor()
    for conv, dw, ew in [(1.0, 0.2, 0.1), (0.5, 0.4, 0.1), (0.2, 0.1, 0.3), (2.0, 0.8, 0.2)]:
        f = model(conv, dw, ew)
        earlier.observe(f, board(f), source=f"sha{conv}")
    fresh = Predictor(history=list(earlier.observations))
    other_model = model(3.0, 1.0, 0.5)
    assert abs(fresh.latency_ms(other_model) / board(other_model) - 1) < 0.15
    assert fresh.predict(other_model).sigma < Predictor().predict(other_model).sigma / 3


def test_features_round_trip_through_json():
    f = model(1.0, 0.2, 0.1, "int8", quant=0.1)
    assert Features.from_dict(f.to_dict()) == f


def test_memory_prediction_refits():
    predictor = Predictor()
    for mb in (1, 4, 9):
        f = Features(1.0, 10, "fp32", mb * 1_000_000, 0)
        predictor.observe(f, 1.0, 50.0 + 1.5 * mb)
    assert abs(predictor.peak_rss_mb(Features(1.0, 10, "fp32", 6_000_000, 0)) - 59.0) < 0.5


def test_threads_cost_a_per_kernel_overhead_the_fit_can_learn():
    def on_board(f: Features) -> float:  # tiny model: a second thread only adds synchronisation per op
        return 0.002 * f.layers * (1 + 0.5 * (f.threads - 1)) + 0.01

    predictor = Predictor()
    for f in [Features(0.001 / t, layers, "fp32", 1000, 1000, "onnx", t) for layers in (8, 20, 40) for t in (1, 2)]:
        predictor.observe(f, on_board(f))
    probe = Features(0.0005, 30, "fp32", 1000, 1000, "onnx", 2)
    assert abs(predictor.latency_ms(probe) - on_board(probe)) / on_board(probe) < 0.1


def test_a_thread_count_measured_for_one_precision_predicts_it_for_the_others():
    """The same artifact at one and two threads gives the board's thread factor; the int8 artifact,
    measured at one thread only, is then predicted at two."""
    def on_board(f: Features) -> float:
        return board(f) * (0.55 if f.threads == 2 else 1.0)

    predictor = Predictor()
    fp32_2, fp32_1, int8_1 = model(1.0, 0.2, 0.1, threads=2), model(1.0, 0.2, 0.1), model(1.0, 0.2, 0.1, "int8")
    for f in (fp32_2, fp32_1):
        predictor.observe(f, on_board(f))
    unknown = predictor.predict(model(1.0, 0.2, 0.1, "int8", threads=2)).sigma
    predictor.observe(int8_1, on_board(int8_1))
    int8_2 = model(1.0, 0.2, 0.1, "int8", threads=2)
    prediction = predictor.predict(int8_2)
    assert abs(prediction.ms / on_board(int8_2) - 1) < 0.1
    assert prediction.sigma < unknown
    assert abs(predictor.coefficients()["tau onnx/2"] - 0.55) < 0.01  # against one thread, measured most


def test_a_dynamic_plan_does_not_teach_its_slowness_to_the_float_model():
    """Dynamic int8 runs its float kernels between quantize steps, at another speed than a float model's:
    its measurement must not move the fp32 candidates' prediction."""
    baseline, pruned = model(1.0, 0.2, 0.1), model(0.5, 0.1, 0.1)
    dynamic = Features(1.3, 45, "fp32", 500, 1000, "onnx", 1, "dynamic", kernels=baseline.kernels)
    predictor = Predictor()
    predictor.observe(baseline, board(baseline))
    before = predictor.latency_ms(pruned)
    predictor.observe(dynamic, 10 * board(baseline))
    assert abs(predictor.latency_ms(pruned) / before - 1) < 0.05
