"""Artifact: a file edgepack made, with its lineage, its I/O layout and how it was verified.

Each artifact carries a sidecar ``<file>.edgepack.json`` (``edgepack.json`` inside a directory
artifact) that records, for every input and output, the layout in the artifact and the permutation
that takes data from the source model's layout into it. Users always give data in the source layout;
whoever feeds the artifact applies ``perm``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgepack import __version__, strict_json
from edgepack.errors import EdgepackError
from edgepack.model import file_sha256


@dataclass(frozen=True)
class Binding:
    """One input or output of an artifact and its source counterpart."""

    name: str  # in the artifact
    source_name: str
    shape: tuple[int, ...]  # in the artifact
    dtype: str
    layout: str  # in the artifact
    source_layout: str
    perm: tuple[int, ...] | None  # source layout -> artifact layout; None: identical
    scale: float | None = None  # int8/uint8 I/O: real = (q - zero_point) * scale
    zero_point: int | None = None

    def to_source(self, array: Any) -> Any:
        """Transpose an artifact-layout array back into the source layout."""
        import numpy as np

        if self.perm is None:
            return array
        return np.transpose(array, np.argsort(self.perm))

    def from_source(self, array: Any) -> Any:
        import numpy as np

        array = array if self.perm is None else np.transpose(array, self.perm)
        if tuple(np.shape(array)) != self.shape and np.size(array) == int(np.prod(self.shape)):
            array = np.reshape(array, self.shape)  # a size-1 axis the artifact adds or drops ([] as [1])
        return array


@dataclass
class Artifact:
    path: Path
    format: str  # onnx | tflite | savedmodel | torch
    route: str
    source_sha256: str
    inputs: list[Binding]
    outputs: list[Binding]
    precision: str = "fp32"
    validation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    sha256: str = ""
    size_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.sha256 and self.path.exists():
            self.sha256, self.size_bytes = file_sha256(self.path)

    @property
    def metadata_path(self) -> Path:
        return self.path / "edgepack.json" if self.path.is_dir() else Path(f"{self.path}.edgepack.json")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["edgepack_version"] = __version__
        return data


    @classmethod
    def load(cls, path: Path) -> Artifact:
        """The artifact at ``path``, as its sidecar ``.edgepack.json`` describes it."""
        import json

        probe = cls(path, "", "", "", [], [], sha256="-")
        data = json.loads(probe.metadata_path.read_text())
        data.pop("edgepack_version", None)
        data["path"] = path
        for side in ("inputs", "outputs"):
            data[side] = [Binding(**{**b, "shape": tuple(b["shape"]),
                                     "perm": tuple(b["perm"]) if b["perm"] is not None else None})
                          for b in data[side]]
        return cls(**data)


def channels_last_perm(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def layout_of_perm(source_layout: str, perm: tuple[int, ...] | None) -> str:
    if perm is None or len(source_layout) != len(perm):
        return source_layout
    return "".join(source_layout[i] for i in perm)


class OutputError(EdgepackError):
    """``-o`` names something edgepack did not write: it is never replaced."""


def written_by_edgepack(path: Path) -> bool:
    """A file with its ``.edgepack.json`` sidecar, or a directory artifact with ``edgepack.json`` inside."""
    if path.is_symlink():
        return False
    if path.is_dir():
        return (path / "edgepack.json").is_file()
    return Path(f"{path}.edgepack.json").is_file()


def resolve_output(output: Path, default_name: str, *, directory_artifact: bool = False) -> Path:
    """Where ``-o OUTPUT`` puts an artifact, checked before any work is done.

    An existing directory that is not itself an edgepack directory artifact receives the artifact
    inside it, as ``default_name`` (``-o proj/``, ``-o .``). Whatever sits at the final path is
    replaced only when edgepack wrote it (``written_by_edgepack``); anything else is refused.
    """
    output = Path(output)
    if output.is_dir() and not output.is_symlink() and not (directory_artifact and written_by_edgepack(output)):
        output = output / default_name
    output = output.absolute()
    check_replaceable(output)
    return output


def check_replaceable(path: Path) -> None:
    if (path.exists() or path.is_symlink()) and not written_by_edgepack(path):
        kind = "directory" if path.is_dir() and not path.is_symlink() else "file"
        raise OutputError(f"{path} exists and is a {kind} edgepack did not write",
                          "edgepack replaces only what it wrote: remove it or pick another -o")


def install(staged: Path, artifact: Artifact, output: Path) -> Artifact:
    """Move a finished file or directory into ``output`` with its metadata, atomically.

    ``staged`` must be on the same filesystem as ``output`` (a temporary directory beside it).
    The artifact's ``path`` becomes ``output``; its sha256 and size are those of ``staged``. What is at
    ``output`` already is replaced only when edgepack wrote it (:class:`OutputError` otherwise).
    """
    import os
    import shutil

    check_replaceable(output)
    artifact.path = output
    artifact.sha256, artifact.size_bytes = file_sha256(staged)
    meta = staged / "edgepack.json" if staged.is_dir() else staged.parent / f"{output.name}.edgepack.json"
    meta.write_text(strict_json.dumps(artifact.to_dict(), indent=2) + "\n")
    aside = staged.parent / ".replaced"
    if output.is_dir() or (output.exists() and staged.is_dir()):  # a rename cannot replace a directory
        os.replace(output, aside)
    os.replace(staged, output)
    if aside.is_dir():
        shutil.rmtree(aside)
    elif aside.exists():
        aside.unlink()
        Path(f"{output}.edgepack.json").unlink(missing_ok=True)  # the replaced file's sidecar
    if not output.is_dir():
        os.replace(meta, artifact.metadata_path)
    return artifact


def staging_dir(output: Path) -> Path:
    """A fresh hidden directory beside ``output``, so that the final rename is atomic."""
    import tempfile

    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".edgepack-", dir=output.parent))
