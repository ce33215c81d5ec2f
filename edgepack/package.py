"""The deployable package: ``dist/<model>-<device>/`` and ``dist/<model>-<device>.tar.gz``, written
atomically (built in a temporary directory beside it, then renamed into place).

Contents: the model file; ``manifest.json`` (versions, hashes, plan, I/O with layout and quantization,
preprocessing, measured figures and the device's environment, constraints and whether each held,
tool versions, every file's sha256); ``run.py`` (runs on the device with whatever runtime it has);
``README.md``; ``report.html`` (Pareto plot of size against latency, the candidate table, the chosen
candidate's per-op profile). ``manifest.json`` also gives every file's size (``sizes``), and is the first
member of the archive: a deployment refuses a member larger than that before extracting it.

Names in the README come from the model and the board (tensor names, file names, runtime versions):
each is written as Markdown code or escaped text, never as Markdown or HTML of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack import __version__, strict_json
from edgepack.artifact import Artifact
from edgepack.errors import EdgepackError
from edgepack.model import file_sha256
from edgepack.report import render_report
from edgepack.text import printable

if TYPE_CHECKING:
    from edgepack.search.result import BuildResult
    from edgepack.search.space import ConstraintCheck

RUN_PY = Path(__file__).resolve().parent / "templates" / "run.py"
TOOLS = ("onnx", "onnxruntime", "tensorflow-cpu", "ai-edge-litert", "onnx2tf", "torch", "torch-pruning",
         "litert-torch", "numpy")


@dataclass
class PackageContents:
    name: str  # <model>-<device>
    artifact: Artifact
    source_name: str
    source_sha256: str
    device: str
    plan: dict[str, Any]  # the manifest's: the recipe, its route, its parameters and its checks
    measurement: dict[str, Any] | None = None  # the manifest's: the harness's JSON for the chosen candidate
    constraints: tuple[ConstraintCheck, ...] = ()
    preprocessing: dict[str, Any] | None = None
    sample: Any = None  # one input sample in the source layout: sample.npy, for run.py's smoke test
    #: Files the device's toolchains made (Vela's compiled model and reports, a firmware's C sources),
    #: by their name in the package; and what the manifest says of them.
    toolchain_files: dict[str, Path] = field(default_factory=dict)
    toolchain: dict[str, Any] = field(default_factory=dict)
    build: BuildResult | None = None  # what report.html shows; None: a package written without a build


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _sha256(path: Path) -> str:
    return file_sha256(path)[0]


def manifest_for(contents: PackageContents, model_file: str) -> dict[str, Any]:
    a = contents.artifact

    def io(binding: Any) -> dict[str, Any]:
        data = {"name": binding.name, "source_name": binding.source_name, "shape": list(binding.shape),
                "dtype": binding.dtype, "layout": binding.layout, "source_layout": binding.source_layout,
                "perm": list(binding.perm) if binding.perm else None, "scale": binding.scale,
                "zero_point": binding.zero_point}
        inverse = sorted(range(len(binding.perm)), key=binding.perm.__getitem__) if binding.perm else None
        data["source_shape"] = [binding.shape[i] for i in inverse] if inverse else list(binding.shape)
        if binding.perm:
            data["layout_change"] = f"{binding.source_layout} -> {binding.layout} (run.py transposes)"
        return data

    return {
        "edgepack_version": __version__,
        "model_file": model_file,
        "format": a.format,
        "source": {"name": contents.source_name, "sha256": contents.source_sha256},
        "artifact_sha256": a.sha256,
        "device": contents.device,
        "plan": contents.plan,
        "route": a.route,
        "inputs": [io(b) for b in a.inputs],
        "outputs": [io(b) for b in a.outputs],
        "preprocessing": contents.preprocessing,
        "validation": a.validation,
        "measured": contents.measurement,
        "constraints": {c.name: c.to_dict() for c in contents.constraints},
        "tool_versions": tool_versions(),
        **contents.toolchain,
    }


class PackageError(EdgepackError):
    """A package cannot be written: its place holds something else, or its model is not what was verified."""


def _is_package(path: Path) -> bool:
    """A directory edgepack wrote as a package: a manifest.json that says so."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return "edgepack_version" in json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False


def _is_package_archive(path: Path, name: str) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with tarfile.open(path, "r:gz") as tar:
            return f"{name}/manifest.json" in tar.getnames()
    except (tarfile.TarError, OSError, EOFError):
        return False


def package_name(model_name: str, device: str) -> str:
    return f"{model_name}-{device}"


def check_package_target(dist: Path, name: str) -> None:
    """Refuse, before any work, to replace a ``dist/<name>`` or ``dist/<name>.tar.gz`` edgepack did not write."""
    for path, ours in ((dist / name, _is_package), (dist / f"{name}.tar.gz",
                                                    lambda p: _is_package_archive(p, name))):
        if (path.exists() or path.is_symlink()) and not ours(path):
            raise PackageError(f"{path} exists and is not a package edgepack wrote",
                               "edgepack replaces only what it wrote: remove it or pick another -o")


def write_package(contents: PackageContents, dist: Path) -> Path:
    """Write ``dist/<name>/`` and ``dist/<name>.tar.gz``; returns the directory.

    The model is copied and hashed again: a file that is not the artifact that was verified (sha256)
    is never packaged. An earlier package of the same name is replaced; anything else is refused.
    """
    check_package_target(dist, contents.name)
    dist.mkdir(parents=True, exist_ok=True)
    final = dist / contents.name
    staging = Path(tempfile.mkdtemp(prefix=".edgepack-package-", dir=dist))
    try:
        root = staging / contents.name
        root.mkdir()
        model_file = f"model.{contents.artifact.format}"
        shutil.copyfile(contents.artifact.path, root / model_file)
        if _sha256(root / model_file) != contents.artifact.sha256:
            raise PackageError(f"{contents.artifact.path} changed after it was verified (sha256 differs)",
                               "build again: the artifact is rebuilt")
        shutil.copyfile(RUN_PY, root / "run.py")
        for name, path in contents.toolchain_files.items():
            shutil.copyfile(path, root / name)
        if contents.sample is not None:
            import numpy as np

            np.save(root / "sample.npy", np.asarray(contents.sample))
        manifest = manifest_for(contents, model_file)
        (root / "README.md").write_text(_readme(contents, manifest))
        (root / "report.html").write_text(render_report(contents.name, contents.build, contents.constraints),
                                          encoding="utf-8")
        files = sorted(root.iterdir())
        manifest["files"] = {p.name: _sha256(p) for p in files}
        manifest["sizes"] = {p.name: p.stat().st_size for p in files}
        (root / "manifest.json").write_text(strict_json.dumps(manifest, indent=2) + "\n")
        archive = staging / f"{contents.name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:  # the manifest first: it bounds every member after it
            tar.add(root, arcname=contents.name, recursive=False)
            for path in [root / "manifest.json", *files]:
                tar.add(path, arcname=f"{contents.name}/{path.name}")
        if final.exists():
            os.replace(final, staging / "replaced")
        os.replace(root, final)
        os.replace(archive, dist / f"{contents.name}.tar.gz")
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # what can open Markdown inside a line


def md_text(value: Any, limit: int = 200) -> str:
    """``value`` as Markdown text that renders as exactly itself: one printable line, HTML's ``& < >``
    as entities (no tag of a model's names is ever in the file), Markdown's punctuation escaped."""
    text = printable(value, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _plan_line(plan: dict[str, Any]) -> str:
    """The plan's levels in a few words, escaped: format, precision, pruning, threads, route."""
    words = [md_text(plan.get(k), 40) for k in ("format", "precision") if plan.get(k)]
    if isinstance(plan.get("prune_ratio"), int | float):
        words.append(f"pruned {plan['prune_ratio']:.0%}")
    if isinstance(plan.get("threads"), int):
        words.append(f"{plan['threads']} thread{'s' if plan['threads'] != 1 else ''}")
    if plan.get("route"):
        words.append(f"route {md_text(plan['route'], 80)}")
    return ", ".join(words) or "as given"


def _io_rows(bindings: list[dict[str, Any]]) -> list[str]:
    """A table row per input or output: its name (the model's, escaped), shape, dtype and layout."""
    return [f"| {md_text(b['source_name'], 120)} | {md_text(b['source_shape'], 60)} | "
            f"{md_text(b['dtype'] if not b['scale'] else 'float32', 20)} | {md_text(b['source_layout'], 20)} |"
            for b in bindings]


def _readme(contents: PackageContents, manifest: dict[str, Any]) -> str:
    i = manifest["inputs"][0]
    measured = contents.measurement or {}
    latency = measured.get("latency_ms", {})
    table = ["| name | shape | dtype | layout |", "|---|---|---|---|"]
    return (f"# {md_text(contents.name)}\n\nBuilt by edgepack {__version__} from {md_text(contents.source_name)} "
            f"for {md_text(contents.device)}.\n\n"
            f"Plan: {_plan_line(contents.plan)} (all of it: `plan` in manifest.json)\n\n"
            + (f"Measured on {md_text(measured.get('measured_on', 'the device'))}: "
               f"p50 {latency.get('p50', float('nan')):.3f} ms, "
               f"p90 {latency.get('p90', float('nan')):.3f} ms, peak RSS {measured.get('peak_rss_mb', 0):.1f} MB "
               f"({md_text(measured.get('runtime'), 40)} {md_text(measured.get('runtime_version'), 40)}).\n\n"
               if latency else "")
            + (f"Latency: not measured, {md_text(measured['why'])}; predicted p50 {measured['predicted_p50_ms']:.3f} "
               "ms (the profile's roofline figures).\n\n" if measured.get("latency_source") == "predicted" else "")
            + "\n".join(["## Inputs", "", *table, *_io_rows(manifest["inputs"]), "", "## Outputs", "", *table,
                         *_io_rows(manifest["outputs"]), "", ""])
            + "(in the layout the original model took; run.py returns quantized outputs as float32)\n\n"
            + "## Run it\n\n```sh\npip install numpy ai-edge-litert    # or tflite-runtime, or onnxruntime for .onnx\n"
            f"python3 run.py sample.npy\n```\n\n`sample.npy`: one sample of shape {md_text(i['source_shape'])} "
            f"({md_text(i['source_layout'], 20)}, {md_text(i['dtype'] if not i['scale'] else 'float32', 20)}), in "
            "the layout the original model took; run.py transposes and quantizes it as manifest.json says."
            + (f" The model itself takes {md_text(i['layout'], 20)} ({md_text(i['layout_change'], 80)})."
               if i.get("layout_change") else "")
            + "\n\n"
            "Check the files against `manifest.json` (`files`: sha256 of each).\n")


def package_report(path: Path) -> Path:
    """A package's report.html; PackageError when ``path`` is not a package edgepack wrote."""
    if path.suffix == ".gz" and path.name.endswith(".tar.gz"):
        raise PackageError(f"{path} is an archive", f"extract it (tar xzf {path.name}) and give the directory")
    if not _is_package(path):
        raise PackageError(f"{path} is not a package edgepack wrote (no manifest.json of edgepack's)",
                           "give the directory edgepack build wrote (dist/<model>-<device>)")
    report = path / "report.html"
    if not report.is_file():
        raise PackageError(f"{path} has no report.html", "build it again with this edgepack")
    return report.resolve()
