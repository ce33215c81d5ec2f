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
    assert Predictor().latency_ms(f) > f.roofline_ms / PRIOR_EFFICIENCY
    assert Predictor().margin == 1.0


def test_refit_learns_each_precisions_efficiency():
    predictor = Predictor()
    for roofline, precision, layers in [(0.5, "fp32", 10), (2.0, "fp32", 30), (1.0, "int8", 12), (0.3, "int8", 40),
                                        (1.2, "fp32", 20), (0.7, "int8", 25)]:
        f = features(roofline, precision, layers)
        predictor.observe(f, device_latency(f))
    for probe in (features(1.5, "fp32", 15), features(0.9, "int8", 35)):
        assert abs(predictor.latency_ms(probe) - device_latency(probe)) / device_latency(probe) < 0.1
    assert predictor.margin < 0.1


def test_memory_prediction_refits():
    predictor = Predictor()
    for mb in (1, 4, 9):
        f = Features(1.0, 10, "fp32", mb * 1_000_000, 0)
        predictor.observe(f, 1.0, 50.0 + 1.5 * mb)
    assert abs(predictor.peak_rss_mb(Features(1.0, 10, "fp32", 6_000_000, 0)) - 59.0) < 0.5
