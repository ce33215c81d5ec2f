from __future__ import annotations

from edgepack.predict import PRIOR_EFFICIENCY, Features, Predictor


def features(roofline_ms: float, precision: str = "fp32", layers: int = 10) -> Features:
    return Features(roofline_ms, layers, precision, int(roofline_ms * 1e6), 1000)


def device_latency(f: Features) -> float:
    """A made-up board: fp32 at 40% of peak, int8 at 20%, 0.01 ms per layer, 0.05 ms fixed."""
    efficiency = {"fp32": 0.4, "int8": 0.2}[f.precision]
    return f.roofline_ms / efficiency + 0.01 * f.layers + 0.05


def test_prior_is_the_roofline_over_an_efficiency():
    f = features(1.0)
    assert Predictor().latency_ms(f) > f.roofline_ms / PRIOR_EFFICIENCY["fp32"]
    assert Predictor().margin == 1.0


def test_refit_learns_each_precisions_efficiency():
    predictor = Predictor()
    for roofline, precision, layers in [(0.5, "fp32", 10), (2.0, "fp32", 30), (1.0, "int8", 12), (0.3, "int8", 40),
                                        (1.2, "fp32", 20), (0.7, "int8", 25)]:
        f = features(roofline, precision, layers)
        predictor.observe(f, device_latency(f))
    for probe in (features(1.5, "fp32", 15), features(0.9, "int8", 35)):
        assert abs(predictor.latency_ms(probe) - device_latency(probe)) / device_latency(probe) < 0.1
    assert predictor.margin < 0.25  # LOO error ~0, blended with the prior error over 4 points


def test_memory_prediction_refits():
    predictor = Predictor()
    for mb in (1, 4, 9):
        f = Features(1.0, 10, "fp32", mb * 1_000_000, 0)
        predictor.observe(f, 1.0, 50.0 + 1.5 * mb)
    assert abs(predictor.peak_rss_mb(Features(1.0, 10, "fp32", 6_000_000, 0)) - 59.0) < 0.5


def test_one_measurement_rescales_the_prior_and_keeps_its_ratios():
    """A board 7x slower than the prior: after one fp32 ONNX point, an unmeasured runtime and precision are
    predicted at the prior's ratio to it, not left at the prior's absolute figure."""
    predictor = Predictor()
    onnx_fp32 = Features(1.0, 10, "fp32", 1000, 1000, "onnx", 1)
    tflite_int8 = Features(0.5, 10, "int8", 1000, 1000, "tflite", 1)
    prior_ratio = predictor.latency_ms(tflite_int8) / predictor.latency_ms(onnx_fp32)
    predictor.observe(onnx_fp32, 7 * predictor.latency_ms(onnx_fp32))
    assert abs(predictor.latency_ms(onnx_fp32) / (7 * Predictor().latency_ms(onnx_fp32)) - 1) < 0.05
    assert abs(predictor.latency_ms(tflite_int8) / predictor.latency_ms(onnx_fp32) / prior_ratio - 1) < 0.2


def test_threads_cost_a_per_op_overhead_the_fit_can_learn():
    def board(f: Features) -> float:  # tiny model: a second thread only adds synchronisation per op
        return 0.002 * f.layers * (1 + 0.5 * (f.threads - 1)) + 0.01

    predictor = Predictor()
    points = [Features(0.001 / t, layers, "fp32", 1000, 1000, "onnx", t) for layers in (8, 20, 40) for t in (1, 2)]
    for f in points:
        predictor.observe(f, board(f))
    probe = Features(0.0005, 30, "fp32", 1000, 1000, "onnx", 2)
    assert abs(predictor.latency_ms(probe) - board(probe)) / board(probe) < 0.1
