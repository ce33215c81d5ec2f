"""Structured pruning of the digits CNN to a size budget, replay, and distillation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgepack.cli import main
from edgepack.compress.channels import PruningError, count_params, prune, prune_to_budget, replay
from edgepack.compress.pruning import prune_model
from edgepack.data import Dataset
from edgepack.examples.digits import INPUT_SHAPE, DigitsData
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry

pytestmark = pytest.mark.slow
EXAMPLE = (torch.zeros(INPUT_SHAPE),)


def test_budget_is_met_and_not_needlessly_undershot(digits_onnx: Path, digits: DigitsData, tmp_path: Path):
    full = digits_onnx.stat().st_size
    budget_mb = 0.4 * full / 1e6
    out = tmp_path / "pruned.onnx"
    result = prune_model(load_model(digits_onnx), Dataset({"image": digits.x_train}, digits.y_train),
                         ProfileRegistry.discover().get("host"), out, max_size_mb=budget_mb,
                         eval_data=Dataset({"image": digits.x_test}, digits.y_test), distill_epochs=20)
    budget = int(budget_mb * 1e6)
    assert out.stat().st_size == result.artifact.size_bytes
    assert 0.85 * budget <= result.artifact.size_bytes <= budget
    before, pruned, distilled = result.stages
    assert pruned.params <= 0.5 * before.params and pruned.macs < before.macs
    assert before.accuracy is not None and distilled.accuracy is not None
    assert before.accuracy - distilled.accuracy <= 0.01  # at most 1 point lost
    assert distilled.accuracy >= pruned.accuracy  # distillation won accuracy back (or kept it)
    history = json.loads(Path(f"{out}.pruning.json").read_text())
    assert history["history"] and history["ratio"] == pytest.approx(result.ratio)


def test_replayed_history_rebuilds_the_same_model(digits_model):
    pruned = prune(digits_model, EXAMPLE, 0.4)
    rebuilt = replay(digits_model, EXAMPLE, pruned.history_json())
    assert count_params(rebuilt) == count_params(pruned.module) < count_params(digits_model)
    for (name, a), (_, b) in zip(pruned.module.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(pruned.module(x), rebuilt(x))


def test_taylor_importance_and_output_layer_is_kept(digits_model, digits: DigitsData):
    pruned = prune(digits_model, EXAMPLE, 0.5, importance="taylor", calib=digits.x_train[:64, None])
    assert pruned.module[-1].out_features == 10  # the classes are the user's contract
    assert pruned.module[0].out_channels == 8


def test_unreachable_budget_is_a_clear_error(digits_model):
    from edgepack.compress.channels import onnx_size

    with pytest.raises(PruningError, match="over the"):
        prune_to_budget(digits_model, EXAMPLE, 1000, lambda m: onnx_size(m, EXAMPLE, ["image"]))


def test_prune_cli(digits_onnx: Path, digits: DigitsData, tmp_path: Path, capsys):
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=digits.x_train[:400], y=digits.y_train[:400])
    code = main(["prune", str(digits_onnx), "--calib", str(calib), "--ratio", "0.3", "--distill-epochs", "3",
                 "-o", str(tmp_path / "p.onnx"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["ratio"] == 0.3 and len(data["stages"]) == 3
    assert data["stages"][1]["params"] < data["stages"][0]["params"]
    assert all(s["latency_ms"] and s["latency_ms"] > 0 for s in data["stages"])
    with pytest.raises(SystemExit) as stop:  # refused by argparse, as the installed command exits
        main(["prune", str(digits_onnx), "--calib", str(calib), "--ratio", "1.5", "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--ratio: must be a number in [0, 1), not '1.5'" in err and err.count("\n") == 1
