"""``edgepack deploy PACKAGE --device NAME --host ...``: put a package on a board, safely.

On the device, under ``~/edgepack/<package>/`` (``--remote-dir``):

    releases/<artifact sha>-<time>/   one directory per deployment
    current -> releases/...            the one in use, switched by an atomic rename

Steps: check the package's files against its manifest here; upload into a hidden partial directory;
check every file's sha256 again ON the device; run ``run.py sample.npy`` there once; only then move
the release into place and switch ``current``. Any failure removes the partial upload and leaves
``current`` (the previous deployment) as it was. Older releases than the previous one are removed.

Nothing from the package or the board is trusted: every manifest field that reaches a remote path is
checked first (``artifact_sha256`` is 64 hex digits, ``model_file`` one of the listed files); an archive
is unpacked member by member as it streams, each refused before extraction when it is larger than the
manifest says; the smoke test must print a prediction with the manifest's output names, shapes and
dtypes; each step on the board runs in its own process group with a timeout that kills it; and what the
board says reaches a message only through ``printable``. The board's faults exit 1 (``DeployFault``), a
step that fails and says why exits 2 (``DeployError``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import shlex
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import BoardFault, EdgepackError, UsageError, first_line
from edgepack.model import file_sha256
from edgepack.profiles import DeviceProfile
from edgepack.runners.factory import SshOptions, runners_for
from edgepack.runners.ssh import CommandStopped
from edgepack.text import printable

STEP_TIMEOUT_S = 60.0  # each step on the board but the smoke test (which has --timeout)
MANIFEST_LIMIT_BYTES = 16 * 2**20
#: an archive's members before its manifest.json (an older edgepack wrote README.md first): each at most
#: this, and this many at most
BEFORE_MANIFEST_LIMIT_BYTES, BEFORE_MANIFEST_MEMBERS = 2**20, 4
UNSIZED_LIMIT_BYTES = 2**30  # a file of a manifest that gives no sizes (an older edgepack's)
SHA256 = re.compile(r"[0-9a-f]{64}")

VERIFY = """import hashlib, json, os, sys
root = sys.argv[1]
files = json.load(open(os.path.join(root, "manifest.json")))["files"]
bad = [n for n, h in sorted(files.items())
       if os.sep in n or n.startswith(".") or os.path.islink(os.path.join(root, n))
       or not os.path.isfile(os.path.join(root, n))
       or hashlib.sha256(open(os.path.join(root, n), "rb").read()).hexdigest() != h]
print(json.dumps({"checked": len(files), "bad": bad}))
"""

SWITCH = """import os, sys
target, link = sys.argv[1], sys.argv[2]
tmp = link + ".new"
if os.path.lexists(tmp):
    os.remove(tmp)
os.symlink(target, tmp)
os.replace(tmp, link)
"""


class DeployError(EdgepackError):
    """The deployment failed, and the board said why (a step's error, e.g. a runtime it lacks or a model
    it cannot load): the user's to fix (exit 2). The device keeps its previous deployment."""


class DeployFault(DeployError, BoardFault):
    """The board failed the deployment: it hung, flooded its output, answered with no answer or a wrong
    one, changed a file, or the connection was lost (exit 1). The previous deployment stays."""


@dataclass
class Deployment:
    host: str
    path: str  # the new release on the device
    current: str  # the link that points at it
    previous: str | None
    files_verified: int
    smoke_test: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: a package's own directory name: one path component, not hidden, no control characters
PACKAGE_DIR = re.compile(r"[^/.\-\x00-\x1f\x7f][^/\x00-\x1f\x7f]*")


def _refuse(archive: Path, problem: str, hint: str = "give what edgepack build wrote, copied whole") -> UsageError:
    return UsageError(f"{archive}: {problem}", hint)


def unpack_archive(archive: Path, work: Path) -> None:
    """Unpack a package's .tar.gz into ``work`` as it streams, one regular file at a time.

    Each member must be ``<package>/<plain name>``; manifest.json at most MANIFEST_LIMIT_BYTES; once it
    has been read, every other member must be a file it lists, no larger than its ``sizes`` say
    (UNSIZED_LIMIT_BYTES when it gives none), and is refused from its header, before a byte is written.
    The few members before the manifest are held to BEFORE_MANIFEST_LIMIT_BYTES each.
    """
    root: str | None = None
    manifest: dict[str, Any] | None = None
    before = 0
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = member.name.removeprefix("./").rstrip("/").split("/")
            said = printable(member.name, 120)
            if not PACKAGE_DIR.fullmatch(parts[0]) or root not in (None, parts[0]):
                raise _refuse(archive, f"{said} is not inside the package's one directory")
            root = parts[0]
            if member.isdir() and len(parts) == 1:
                continue
            name = parts[-1]
            if len(parts) != 2 or not member.isreg() or member.issparse() or not PLAIN_NAME.fullmatch(name):
                raise _refuse(archive, f"{said} is not a plain file of the package", "a package holds plain files only")
            if name == "manifest.json":
                limit, what = MANIFEST_LIMIT_BYTES, "a manifest may be"
            elif manifest is None:
                before += 1
                limit, what = BEFORE_MANIFEST_LIMIT_BYTES, "any file before manifest.json may be"
                if before > BEFORE_MANIFEST_MEMBERS:
                    raise _refuse(archive, f"more than {BEFORE_MANIFEST_MEMBERS} files before manifest.json")
            else:
                files, sizes = manifest.get("files"), manifest.get("sizes")
                if not isinstance(files, dict) or name not in files:
                    raise _refuse(archive, f"{name} is not listed in manifest.json",
                                  "only the files the manifest lists (with their sha256) are deployed")
                given = sizes.get(name) if isinstance(sizes, dict) else None
                if isinstance(given, int) and given >= 0:
                    limit, what = given, "manifest.json says it is"
                else:
                    limit, what = UNSIZED_LIMIT_BYTES, "a file of a package without sizes may be"
            if member.size > limit:
                raise _refuse(archive, f"{name} is {member.size} bytes, more than the {limit} {what}",
                              "a package's files are the sizes its manifest says; rebuild it")
            target = work / root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            try:
                with target.open("xb") as out:
                    shutil.copyfileobj(source, out)  # type: ignore[misc]  # a regular file's, never None
            except FileExistsError:
                raise _refuse(archive, f"{name} appears twice") from None
            if name == "manifest.json":
                try:
                    loaded = json.loads(target.read_bytes())
                except (ValueError, UnicodeDecodeError):
                    loaded = None
                manifest = loaded if isinstance(loaded, dict) else {}


def read_package(package: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    """The package directory (a .tar.gz is unpacked into ``work``) and its manifest, checked here first.

    A package is manifest.json plus exactly the files its ``files`` lists, each a regular file (no
    link) with a plain name and the sha256 the manifest gives. Anything else is refused: only those
    files are ever uploaded, and only they can be imported or run on the device.
    """
    if not package.exists():
        raise UsageError(f"{package}: no such package", "give the directory or .tar.gz that edgepack build wrote")
    if package.is_file():
        try:
            unpack_archive(package, work)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise UsageError(f"{package}: not a complete package archive ({first_line(exc, with_type=True)})",
                             "give what edgepack build wrote, copied whole") from None
        found = [p.parent for p in work.glob("*/manifest.json")]
        if len(found) != 1:
            raise UsageError(f"{package}: no manifest.json inside", "give what edgepack build wrote")
        package = found[0]
    manifest_path = package / "manifest.json"
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise UsageError(f"{package}: no manifest.json", "give the directory that edgepack build wrote")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError):
        manifest = None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise UsageError(f"{package}: manifest.json lists no files", "give what edgepack build wrote")
    if not PACKAGE_DIR.fullmatch(package.resolve().name):
        raise UsageError(f"{package}: the package's directory name {printable(package.resolve().name, 80)!r} "
                         "cannot name a folder on the board", "rename it to a plain name")
    for name, digest in files.items():
        if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or name == "manifest.json":
            raise UsageError(f"{package}: manifest.json names {printable(repr(name), 120)}, not a plain file name",
                             "a package holds plain files only; rebuild it")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise UsageError(f"{package}: manifest.json gives {name} the sha256 {printable(repr(digest), 120)}, "
                             "not 64 hex digits", "rebuild the package")
    for key, valid in (("artifact_sha256", lambda v: isinstance(v, str) and SHA256.fullmatch(v)),
                       ("model_file", lambda v: isinstance(v, str) and v in files)):
        if not valid(manifest.get(key)):  # each reaches a path on the board
            raise UsageError(f"{package}: manifest.json's {key} is {printable(repr(manifest.get(key)), 120)}, not "
                             + ("64 hex digits" if key == "artifact_sha256" else "one of its files"),
                             "rebuild the package; edgepack never uses it in a path on the board")
    for path in sorted(package.iterdir()):
        if path.name != "manifest.json" and path.name not in files:
            raise UsageError(f"{package}: {path.name} is not listed in manifest.json",
                             "remove it: only the files the manifest lists (with their sha256) are deployed")
    for name, digest in files.items():
        path = package / name
        if path.is_symlink() or not path.is_file():
            raise UsageError(f"{package}: {name} is {'a link' if path.is_symlink() else 'missing'}",
                             "a package holds regular files only; rebuild it")
        if file_sha256(path)[0] != digest:
            raise UsageError(f"{package}: {name} does not match manifest.json (changed or missing)",
                             "rebuild the package; a changed file is never deployed")
    return package, manifest


def deploy_package(package: Path, profile: DeviceProfile, ssh: SshOptions, remote_dir: str = "edgepack",
                   timeout_s: float = 120.0, say: Callable[[str], None] = lambda _: None) -> list[Deployment]:
    if not ssh.hosts:
        raise UsageError("deploy needs --host", "pass --host user@board[:port]")
    with tempfile.TemporaryDirectory(prefix="edgepack-deploy-") as tmp:
        local, manifest = read_package(package, Path(tmp))
        if manifest.get("device") not in (profile.name, None):
            built_for = printable(manifest["device"], 80)
            raise UsageError(f"{local.name} was built for {built_for}, not {profile.name}",
                             f"deploy with --device {built_for}, or build for {profile.name}")
        deployments = []
        import paramiko

        for runner in runners_for(profile, ssh, say):
            try:
                runner.identity()  # connects, checks the host key; one-line errors for the user's settings
                # one deployment at a time per board: others' partial uploads and old releases are ours to prune
                with runner.device_lock(f"deploying {local.name}"):
                    deployments.append(_deploy_one(runner, local, manifest, remote_dir, timeout_s))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise DeployFault(f"{runner.label}: connection lost during the deployment ({printable(exc, 200)})",
                                  "the previous deployment is still current; run deploy again") from None
            finally:
                runner.close()
        return deployments


def _deploy_one(runner: Any, local: Path, manifest: dict[str, Any], remote_dir: str,
                timeout_s: float) -> Deployment:
    q = shlex.quote
    sftp = runner.open_sftp()
    try:
        home = sftp.normalize(".")
    finally:
        sftp.close()
    if not home.startswith("/") or printable(home, len(home)) != home:
        raise DeployFault(f"{runner.label}: the board gave {printable(repr(home), 120)} as its home directory, "
                          "not a plain path", "check the account on the board; nothing was deployed")
    root = f"{home}/{remote_dir.strip('/')}/{local.name}" if not remote_dir.startswith("/") else \
        f"{remote_dir.rstrip('/')}/{local.name}"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    release = f"{manifest['artifact_sha256'][:12]}-{stamp}-{secrets.token_hex(3)}"
    final, partial = f"{root}/releases/{release}", f"{root}/releases/.{release}.partial"
    python = runner.python

    def run(command: str, what: str, timeout: float = STEP_TIMEOUT_S) -> str:
        try:
            code, out, err = runner.execute(command, timeout)
        except CommandStopped as exc:  # hung or flooding: its process group was killed
            raise DeployFault(f"{runner.label}: {what}: the board {exc.why}; edgepack killed it",
                              "the previous deployment is still current") from None
        if code != 0:
            tail = printable((err.strip() or out.strip() or "no output").splitlines()[-1])
            raise DeployError(f"{runner.label}: {what} failed (the board said: {tail})",
                              "the previous deployment is still current")
        return out

    # partial uploads of earlier deployments that lost their connection
    run(f"mkdir -p -- {q(root + '/releases')} && rm -rf -- {q(root + '/releases')}/.*.partial",
        "preparing the release directory")
    run(f"mkdir -p -- {q(partial)}", "creating the release directory")
    try:
        sftp = runner.open_sftp()
        try:
            for name in [*sorted(manifest["files"]), "manifest.json"]:  # what read_package checked, nothing else
                sftp.put(str(local / name), f"{partial}/{name}")
        finally:
            sftp.close()
        what = "checking sha256 on the device"
        checked = _printed_json(run(f"{q(python)} -c {q(VERIFY)} {q(partial)}", what), runner.label, what)
        bad, count = checked.get("bad"), checked.get("checked")
        if not isinstance(bad, list) or count != len(manifest["files"]):
            raise DeployFault(f"{runner.label}: {what}: the board answered {printable(json.dumps(checked), 200)}, "
                              f"not the check of {len(manifest['files'])} files",
                              "check the board's Python; the previous deployment is still current")
        if bad:
            named = ", ".join(printable(b, 80) for b in bad[:10])
            raise DeployFault(f"{runner.label}: {named} arrived changed (sha256 differs)",
                              "check the device's storage and retry; the previous deployment is still current")
        smoke = _smoke_test(run, runner.label, python, partial, local, manifest, timeout_s)
        previous = printable(runner.execute(f"readlink -- {q(root + '/current')}", STEP_TIMEOUT_S)[1]) or None
        run(f"mv -- {q(partial)} {q(final)}", "moving the release into place")
    except BaseException:
        with contextlib.suppress(Exception):  # connection gone: the next deploy removes it
            runner.execute(f"rm -rf -- {q(partial)}")
        raise
    run(f"{q(python)} -c {q(SWITCH)} {q('releases/' + release)} {q(root + '/current')}", "switching current")
    _remove_old(runner, root, keep={release, (previous or "").rsplit("/", 1)[-1]})
    return Deployment(runner.label, final, f"{root}/current", previous, count, smoke)


def _printed_json(out: str, board: str, what: str) -> dict[str, Any]:
    """The one JSON object a step printed as its last line; DeployError (quoting the board) otherwise."""
    lines = out.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except ValueError:
        found = None
    if not isinstance(found, dict):
        said = printable(lines[-1], 200) if lines else "nothing"
        raise DeployFault(f"{board}: {what}: the board printed no result (it printed: {said})",
                          "check the board's Python; the previous deployment is still current")
    return found


def _smoke_test(run: Any, board: str, python: str, partial: str, local: Path, manifest: dict[str, Any],
                timeout_s: float) -> dict[str, Any]:
    """run.py on the package's sample, on the board: its prediction, once it is the manifest's outputs."""
    q = shlex.quote
    if not (local / "sample.npy").exists():
        return {"skipped": "the package has no sample.npy"}
    what = "the smoke test (run.py sample.npy)"
    result = _printed_json(run(f"cd {q(partial)} && {q(python)} run.py sample.npy", what, timeout_s), board, what)
    problem = prediction_problem(result, manifest.get("outputs") or [])
    if problem:
        raise DeployFault(f"{board}: {what} printed no prediction of this model: {problem}",
                          "check the board's runtime; the previous deployment is still current")
    return result


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _expected_dtype(spec: dict[str, Any]) -> str:
    """What run.py gives back for an output: a quantized integer output dequantized to float32."""
    dtype = str(spec.get("dtype"))
    return "float32" if spec.get("scale") and dtype.startswith(("int", "uint")) else dtype


def prediction_problem(result: dict[str, Any], outputs: list[dict[str, Any]]) -> str | None:
    """Why what run.py printed is not a prediction of the model whose outputs the manifest lists, or None.

    A prediction names exactly the manifest's outputs (their ``source_name``), each with its shape
    (the manifest's ``source_shape``; a dimension that is not a positive number there may be any) and the
    dtype run.py returns, and finite figures; a top-k list has whole class numbers inside the output.
    """
    named = result.get("outputs")
    if not isinstance(named, dict):
        return "no outputs"
    want = {str(o.get("source_name", o.get("name"))): o for o in outputs}
    if set(named) != set(want):
        return f"outputs {printable(sorted(named), 120)}, where the model's are {printable(sorted(want), 120)}"
    for name, spec in want.items():
        got, said = named[name], printable(name, 60)
        if not isinstance(got, dict):
            return f"output {said} is {printable(repr(got), 60)}"
        shape, expected = got.get("shape"), spec.get("source_shape") or spec.get("shape") or []
        if not isinstance(shape, list) or len(shape) != len(expected) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0
                and (not isinstance(e, int) or e <= 0 or d == e) for d, e in zip(shape, expected, strict=False)):
            return f"output {said} has shape {printable(repr(shape), 60)}, the model's is {printable(expected, 60)}"
        if got.get("dtype") != (dtype := _expected_dtype(spec)):
            return f"output {said} is {printable(repr(got.get('dtype')), 40)}, the model's is {printable(dtype, 40)}"
        first, top = got.get("first", []), got.get("top", [])
        if not isinstance(first, list) or not isinstance(top, list) or not all(isinstance(t, dict) for t in top):
            return f"output {said}'s figures are {printable(repr(got), 80)}"
        figures = [got.get(k) for k in ("min", "max") if k in got] + first
        size = math.prod(shape)
        if any(not isinstance(t.get("class"), int) or not 0 <= t["class"] < size for t in top):
            return f"output {said} names a class outside its {size} scores"
        figures += [t.get("score") for t in top]
        if size and (not figures or not all(_finite(v) for v in figures)):
            return f"output {said} has no finite figures"
    if "top" in result and not any(result["top"] == o.get("top") for o in named.values()):
        return f"its top classes {printable(repr(result['top']), 80)} are none of its outputs'"
    return None


def _remove_old(runner: Any, root: str, keep: set[str]) -> None:
    q = shlex.quote
    _, out, _ = runner.execute(f"ls -1A -- {q(root + '/releases')}", STEP_TIMEOUT_S)
    for name in out.split():
        if name not in keep and PLAIN_NAME.fullmatch(name):  # never a hidden one (a partial upload) or a path
            runner.execute(f"rm -rf -- {q(root + '/releases/' + name)}", STEP_TIMEOUT_S)
