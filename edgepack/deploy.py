"""``edgepack deploy PACKAGE --device NAME --host ...``: put a package on a board, safely.

On the device, under ``~/edgepack/<package>/`` (``--remote-dir``):

    releases/<artifact sha>-<time>/   one directory per deployment
    current -> releases/...            the one in use, switched by an atomic rename

Steps: check the package's files against its manifest here; upload into a hidden partial directory;
check every file's sha256 again ON the device; run ``run.py sample.npy`` there once; only then move
the release into place and switch ``current``. Any failure removes the partial upload and leaves
``current`` (the previous deployment) as it was. Older releases than the previous one are removed.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError, UsageError, first_line
from edgepack.model import file_sha256
from edgepack.profiles import DeviceProfile
from edgepack.runners.factory import SshOptions, runners_for

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
    """The deployment failed; the device keeps its previous deployment."""


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
            with tarfile.open(package, "r:gz") as tar:
                tar.extractall(work, filter="data")
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
    for name in files:
        if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or name == "manifest.json":
            raise UsageError(f"{package}: manifest.json names {name!r}, not a plain file name",
                             "a package holds plain files only; rebuild it")
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
            raise UsageError(f"{local.name} was built for {manifest['device']}, not {profile.name}",
                             f"deploy with --device {manifest['device']}, or build for {profile.name}")
        deployments = []
        import paramiko

        for runner in runners_for(profile, ssh, say):
            try:
                runner.identity()  # connects, checks the host key; one-line errors for the user's settings
                # one deployment at a time per board: others' partial uploads and old releases are ours to prune
                with runner.device_lock(f"deploying {local.name}"):
                    deployments.append(_deploy_one(runner, local, manifest, remote_dir, timeout_s))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise DeployError(f"{runner.label}: connection lost during the deployment ({exc})",
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
    root = f"{home}/{remote_dir.strip('/')}/{local.name}" if not remote_dir.startswith("/") else \
        f"{remote_dir.rstrip('/')}/{local.name}"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    release = f"{manifest['artifact_sha256'][:12]}-{stamp}-{secrets.token_hex(3)}"
    final, partial = f"{root}/releases/{release}", f"{root}/releases/.{release}.partial"
    python = runner.python

    def run(command: str, what: str, timeout: float = 60.0) -> str:
        code, out, err = runner.execute(command, timeout)
        if code != 0:
            tail = (err.strip() or out.strip() or "no output").splitlines()[-1][:300]
            raise DeployError(f"{runner.label}: {what} failed: {tail}", "the previous deployment is still current")
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
        checked = json.loads(run(f"{q(python)} -c {q(VERIFY)} {q(partial)}", "checking sha256 on the device"))
        if checked["bad"]:
            raise DeployError(f"{runner.label}: {', '.join(checked['bad'])} arrived changed (sha256 differs)",
                              "check the device's storage and retry; the previous deployment is still current")
        smoke = _smoke_test(run, python, partial, local, timeout_s)
        previous = runner.execute(f"readlink -- {q(root + '/current')}")[1].strip() or None
        run(f"mv -- {q(partial)} {q(final)}", "moving the release into place")
    except BaseException:
        with contextlib.suppress(Exception):  # connection gone: the next deploy removes it
            runner.execute(f"rm -rf -- {q(partial)}")
        raise
    run(f"{q(python)} -c {q(SWITCH)} {q('releases/' + release)} {q(root + '/current')}", "switching current")
    _remove_old(runner, root, keep={release, (previous or "").rsplit("/", 1)[-1]})
    return Deployment(runner.label, final, f"{root}/current", previous, checked["checked"], smoke)


def _smoke_test(run: Any, python: str, partial: str, local: Path, timeout_s: float) -> dict[str, Any]:
    q = shlex.quote
    if not (local / "sample.npy").exists():
        return {"skipped": "the package has no sample.npy"}
    out = run(f"cd {q(partial)} && {q(python)} run.py sample.npy", "the smoke test (run.py sample.npy)", timeout_s)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise DeployError(f"the smoke test printed no result: {out.strip()[:200]!r}",
                          "the previous deployment is still current") from None


def _remove_old(runner: Any, root: str, keep: set[str]) -> None:
    q = shlex.quote
    _, out, _ = runner.execute(f"ls -1A -- {q(root + '/releases')}")
    for name in out.split():
        if name not in keep and not name.startswith("."):
            runner.execute(f"rm -rf -- {q(root + '/releases/' + name)}")
