"""The Python API raises EdgepackError subclasses only, naming the argument at fault; paths are str or
Path alike, a host is one string or a list of them, batches of one tensor are samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack import BuildOptions, Constraints
from edgepack.data import DataError
from edgepack.errors import EdgepackError, UsageError


def test_numbers_out_of_range_name_the_argument(digits_onnx: Path, tmp_path: Path):
    cases = [
        (lambda: edgepack.prune(digits_onnx, None, ratio="abc", output=tmp_path), "ratio must be a number in [0, 1)"),
        (lambda: edgepack.prune(digits_onnx, None, ratio=1.0, output=tmp_path), "ratio must be a number in [0, 1)"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(threads="1", output_dir=tmp_path / "d")),
         "threads must be a list of"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(threads=[1, 0], output_dir=tmp_path / "d")),
         "threads must be a list of"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(prune_ratios=[0, 1.5], output_dir=tmp_path / "d")),
         "prune_ratios must be"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(runs=0, output_dir=tmp_path / "d")),
         "runs must be a whole number of"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(jobs=True, output_dir=tmp_path / "d")),
         "jobs must be a whole number"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(Constraints(max_size_mb=-1),
                                                                  output_dir=tmp_path / "d")),
         "max_size_mb must be a number"),
        (lambda: edgepack.build(digits_onnx, options=BuildOptions(cache_dir=3, output_dir=tmp_path / "d")),
         "cache_dir must be a path"),
        (lambda: edgepack.profile(digits_onnx, runs=-5), "runs must be a whole number of at least 1, not -5"),
        (lambda: edgepack.profile(digits_onnx, timeout_s=-1), "timeout_s must be a number above 0"),
        (lambda: edgepack.profile(digits_onnx, hosts=5), "hosts must be a host"),
        (lambda: edgepack.profile(3), "model must be a path"),
        (lambda: edgepack.quantize(digits_onnx, None, max_accuracy_drop="1"), "max_accuracy_drop must be a number"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError) as caught:
            call()
        assert message in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_file_is_refused_before_the_model_is_read(tmp_path: Path):
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"not mine")
    with pytest.raises(UsageError, match=f"output {existing} is a file, not a folder"):
        edgepack.build(tmp_path / "no-such-model.onnx", options=BuildOptions(output_dir=existing))
    with pytest.raises(UsageError, match=f"cache_dir {existing} is a file"):
        edgepack.build(tmp_path / "no-such-model.onnx",
                       options=BuildOptions(output_dir=str(tmp_path / "d"), cache_dir=str(existing)))
    assert existing.read_bytes() == b"not mine"


def test_a_host_string_is_one_host(digits_onnx: Path):
    """``hosts="root@127.0.0.1:1"`` is that board (nothing listens on port 1), not 16 one-letter hosts."""
    with pytest.raises(EdgepackError) as caught:
        edgepack.profile(digits_onnx, "rpi4", hosts="root@127.0.0.1:1", runs=3, warmup=1)
    assert "127.0.0.1" in str(caught.value) and ":1" in str(caught.value)
    assert "'r'" not in str(caught.value)


def test_cache_dir_and_output_as_str_build_a_package(digits, digits_onnx: Path, tmp_path: Path):
    options = BuildOptions(output_dir=str(tmp_path / "dist"), cache_dir=str(tmp_path / "cache"), formats=["onnx"],
                           precisions=["fp32"], prune_ratios=[0], threads=[1], max_measurements=1, runs=3, warmup=1,
                           jobs=1)
    result = edgepack.build(str(digits_onnx), "host", calib=digits.x_train[:60], options=options)
    assert Path(result.package).parent == tmp_path / "dist" and (Path(result.package) / "manifest.json").is_file()
    assert (tmp_path / "cache" / "records.jsonl").is_file()


def test_a_dataloader_of_one_tensor_per_batch_is_samples(digits, digits_model, tmp_path: Path):
    """TensorDataset(x) yields (x,) batches, the last one shorter: they are samples, stacked."""
    import torch

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(digits.x_train[:90])),
                                         batch_size=32)
    result = edgepack.quantize(digits_model, loader, "int8", str(tmp_path), format="onnx",
                               eval={"x": digits.x_test[:60], "y": digits.y_test[:60]},
                               example_input=torch.zeros(1, 1, 8, 8))
    assert result.artifact.path.parent == tmp_path and result.fidelity.accuracy > 0.9


def test_batches_that_do_not_stack_name_the_argument(digits, digits_onnx: Path, tmp_path: Path):
    from edgepack.api import dataset, load

    handle = load(digits_onnx, tmp_path)
    with pytest.raises(UsageError, match=r"calib: the batches' samples differ in shape"):
        dataset([digits.x_train[:4], digits.x_train[:4, :, :4]], handle, tmp_path, "calibration")
    with pytest.raises(UsageError, match=r"eval: batch 0 has 3 parts"):
        dataset([(digits.x_train[:4], digits.y_train[:4], 0)], handle, tmp_path, "evaluation")


def test_labels_that_cannot_be_class_indices_are_refused(digits, digits_onnx: Path, tmp_path: Path):
    x, y = digits.x_test[:40], digits.y_test[:40]
    for labels, message in ((y + 1000, r"eval: label 100\d is no class index of the output '\w+' \(10 classes"),
                            (y + 0.5, r"^eval: labels \(y\) must be class indices, given \d\.5"),
                            (y - 20, r"labels \(y\) must be class indices from 0")):
        with pytest.raises(DataError, match=message):
            edgepack.quantize(digits_onnx, x, "int8", tmp_path, format="onnx", eval={"x": x, "y": labels})
    assert list(tmp_path.iterdir()) == []
    from edgepack.api import dataset, load

    data = dataset({"x": x, "y": y.astype(np.float32)}, load(digits_onnx, tmp_path), tmp_path, "evaluation")
    assert np.array_equal(data.labels, y)  # whole numbers as floats are class indices


def test_a_module_torch_cannot_export_names_example_input(digits_model):
    import torch

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(UsageError, match=r"example_input \[1, 1, 4, 4\]: torch.export cannot trace Sequential"):
        edgepack.inspect(digits_model, example_input=torch.zeros(1, 1, 4, 4))
    with pytest.raises(UsageError, match=r"example_input \[1, 3\]: torch.export cannot trace Branchy"):
        edgepack.inspect(Branchy(), example_input=torch.ones(1, 3))
    with pytest.raises(UsageError, match=r"example_input must be a torch\.Tensor"):
        edgepack.inspect(digits_model, example_input=np.zeros((1, 1, 8, 8), np.float32))


def test_prune_rounds_channels_as_the_pruner_does_by_default():
    import inspect

    from edgepack.compress.channels import ROUND_TO

    assert inspect.signature(edgepack.prune).parameters["round_to"].default == ROUND_TO
