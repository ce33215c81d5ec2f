"""``edgepack deploy`` to a board (a real sshd on loopback): concurrent deployments, a board that hangs,
prints garbage or lies, and packages that lie.

A board's faults: one line, exit 1, nothing left running on it, its previous deployment untouched. A
package's lies (a manifest field that would make a path, a file the manifest does not cover, an archive
member larger than the manifest says, an archive cut short): one line, exit 2, nothing uploaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack import deploy
from edgepack.deploy import deploy_package
from edgepack.profiles import ProfileRegistry
from edgepack.runners.factory import SshOptions
from edgepack.runners.loopback import SshDevice, running

pytestmark = pytest.mark.device


def deploy_args(dev: SshDevice, package: Path, remote: Path, python: str | None = None) -> list[object]:
    return ["deploy", package, "--device", "host", "--host", dev.target, "--known-hosts", dev.known_hosts,
            "--identity", dev.client_key, "--remote-python", python or dev.python, "--remote-dir", remote]


def assert_board_fault(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit 1 (the board's fault), nothing on stdout, one line on stderr naming each fragment."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("edgepack: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def nothing_deployed(remote: Path) -> bool:
    """No release, no partial upload and no ``current`` under the package's remote folder."""
    root = remote / "digits-host"
    return not (root / "current").exists() and not list((root / "releases").iterdir())


# -- a board that hangs or prints garbage -------------------------------------------------------------------

HANGS = 'echo $$ >> "$PIDS"\nsleep 600 &\necho $! >> "$PIDS"\nwait'
SMOKE_ONLY = 'case " $* " in *" run.py "*)\n{}\n;; esac\nexec "$REAL" "$@"'  # the real Python, but for run.py


def test_a_python_that_prints_garbage_fails_the_deployment_in_one_line(cli, device: SshDevice, package: Path,
                                                                       tmp_path: Path):
    python = device.broken_python("garbage", "echo '{garbage'")
    assert_board_fault(cli(*deploy_args(device, package, tmp_path / "r", python)),  # was: a JSONDecodeError
                       "checking sha256 on the device: the board printed no result (it printed: {garbage)")
    assert nothing_deployed(tmp_path / "r")


def test_a_python_that_hangs_is_killed_after_the_step_timeout(cli, device: SshDevice, package: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(deploy, "STEP_TIMEOUT_S", 3.0)
    python = device.broken_python("hangs-verify", HANGS)
    start = time.monotonic()
    assert_board_fault(cli(*deploy_args(device, package, tmp_path / "r", python)),  # was: "connection lost", 67 s
                       "checking sha256 on the device: the board did not finish within 3 s; edgepack killed it")
    assert time.monotonic() - start < 30
    pids = device.started_pids("hangs-verify")
    assert len(pids) == 2 and not [p for p in pids if running(p)]
    assert nothing_deployed(tmp_path / "r")


def test_a_smoke_test_that_hangs_is_killed_after_timeout(cli, device: SshDevice, package: Path, tmp_path: Path):
    python = device.broken_python("hangs-smoke", SMOKE_ONLY.format(HANGS))
    assert_board_fault(cli(*deploy_args(device, package, tmp_path / "r", python), "--timeout", "3"),
                       "the smoke test (run.py sample.npy): the board did not finish within 3 s")
    pids = device.started_pids("hangs-smoke")
    assert len(pids) == 2 and not [p for p in pids if running(p)]
    assert nothing_deployed(tmp_path / "r")


def prediction(**changes: object) -> str:
    """What run.py prints for the digits package, changed."""
    output = {"shape": [1, 10], "dtype": "float32", "top": [{"class": 3, "score": 9.5}], **changes}
    return json.dumps({"top": output.get("top"), "outputs": {"linear_1": output}})


@pytest.mark.parametrize(("printed", "problem"), [
    ("{}", "no outputs"),
    (json.dumps({"outputs": {"probabilities": {"shape": [1, 10], "dtype": "float32"}}}),
     "outputs ['probabilities'], where the model's are ['linear_1']"),
    (prediction(shape=[1, 1000]), "output linear_1 has shape [1, 1000], the model's is [1, 10]"),
    (prediction(dtype="float64"), "output linear_1 is 'float64', the model's is float32"),
    (prediction(top=[{"class": 12, "score": 1.0}]), "output linear_1 names a class outside its 10 scores"),
    (prediction(top=[{"class": 1, "score": float("nan")}]), "output linear_1 has no finite figures"),
])
def test_the_smoke_test_must_print_a_prediction_of_this_model(cli, device: SshDevice, package: Path, tmp_path: Path,
                                                              printed: str, problem: str):
    manifest = json.loads((package / "manifest.json").read_text())
    assert [o["source_name"] for o in manifest["outputs"]] == ["linear_1"]  # what the cases above assume
    python = device.broken_python("lies", SMOKE_ONLY.format(f"echo '{printed}'; exit 0"))
    assert_board_fault(cli(*deploy_args(device, package, tmp_path / "r", python)),
                       f"printed no prediction of this model: {problem}")
    assert nothing_deployed(tmp_path / "r")


def test_what_the_board_says_reaches_the_terminal_plain(cli, one_line_error, device: SshDevice, package: Path,
                                                       tmp_path: Path):
    escapes = r"printf '\033]0;owned\007\033[31mno runtime\033[0m \033[2Khere\n' >&2; exit 1"
    python = device.broken_python("escapes", SMOKE_ONLY.format(escapes))
    # a step that fails and says why: the user's to act on (exit 2), in the board's words made plain
    line = one_line_error(cli(*deploy_args(device, package, tmp_path / "r", python)),
                          "the smoke test (run.py sample.npy) failed (the board said: no runtime here)")
    assert "\x1b" not in line and "\r" not in line and "owned" not in line


def test_a_good_deployment_returns_the_checked_prediction(device: SshDevice, package: Path, tmp_path: Path):
    from edgepack.profiles import ProfileRegistry
    from edgepack.runners.factory import SshOptions

    options = SshOptions((device.target,), device.known_hosts, device.client_key, remote_python=device.python,
                         ssh_config=device.root / "no_ssh_config")
    done = deploy.deploy_package(package, ProfileRegistry.discover([]).get("host"), options, str(tmp_path / "r"))[0]
    scores = done.smoke_test["outputs"]["linear_1"]
    assert scores["shape"] == [1, 10] and scores["dtype"] == "float32" and done.smoke_test["top"] == scores["top"]
    assert (tmp_path / "r" / "digits-host" / "current").resolve() == Path(done.path)


# -- a package that lies --------------------------------------------------------------------------------------

def with_manifest(package: Path, tmp_path: Path, **changes: object) -> Path:
    copy = tmp_path / package.name
    shutil.copytree(package, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(changes)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(("field", "value", "message"), [
    ("artifact_sha256", "/../../../PW", "manifest.json's artifact_sha256 is '/../../../PW', not 64 hex digits"),
    ("model_file", "../../../etc/passwd", "manifest.json's model_file is '../../../etc/passwd', not one of its files"),
])
def test_a_manifest_field_that_would_make_a_path_is_refused(cli, one_line_error, device: SshDevice, package: Path,
                                                            tmp_path: Path, field: str, value: str, message: str):
    home = tmp_path / "home"  # the board's home is the test's own folder: nothing may appear in it
    home.mkdir()
    lied = with_manifest(package, tmp_path, **{field: value})
    one_line_error(cli(*deploy_args(device, lied, home / "edgepack")), message)
    assert not list(home.iterdir()) and not list(tmp_path.rglob("PW*"))


def ssh_args(dev: SshDevice, python: str | None = None) -> list[str]:
    return ["--host", dev.target, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.client_key),
            "--remote-python", python or dev.python]


def tamper(package: Path, tmp_path: Path, kind: str) -> Path:
    copy = tmp_path / package.name
    shutil.copytree(package, copy)
    if kind == "unlisted file":
        (copy / "numpy.py").write_text("raise SystemExit('imported from the package')\n")
    elif kind == "symlink":
        secret = tmp_path / "secret.txt"
        secret.write_text("not for the board")
        (copy / "README.md").unlink()
        (copy / "README.md").symlink_to(secret)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["files"]["README.md"] = hashlib.sha256(secret.read_bytes()).hexdigest()
        (copy / "manifest.json").write_text(json.dumps(manifest))
    else:
        outside = tmp_path / "outside.txt"
        outside.write_text("outside")
        manifest = json.loads((copy / "manifest.json").read_text())
        name = "../outside.txt" if kind == "dotdot name" else str(outside)
        manifest["files"][name] = hashlib.sha256(b"outside").hexdigest()
        (copy / "manifest.json").write_text(json.dumps(manifest))
    if kind == "unlisted file":  # inside a .tar.gz, as packages travel
        archive = tmp_path / f"{package.name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(copy, arcname=package.name)
        return archive
    return copy


@pytest.mark.parametrize(("kind", "message"), [
    ("unlisted file", "numpy.py is not listed in manifest.json"),
    ("symlink", "README.md is a link"),
    ("dotdot name", "manifest.json names '../outside.txt', not a plain file name"),
    ("absolute name", "not a plain file name"),
])
def test_deploy_refuses_what_the_manifest_does_not_cover(cli, one_line_error, device: SshDevice, package: Path,
                                                         tmp_path: Path, kind: str, message: str):
    tampered = tamper(package, tmp_path, kind)
    one_line_error(cli("deploy", tampered, "--device", "host", *ssh_args(device), "--remote-dir", tmp_path / "r"),
                   message)
    assert not (tmp_path / "r").exists()  # nothing uploaded


def archive_with(package: Path, tmp_path: Path, grow: str, extra_bytes: int) -> Path:
    """The package's archive, manifest.json first, with ``grow`` made ``extra_bytes`` larger than the manifest
    says (zeros, which gzip shrinks to almost nothing: a small archive that unpacks huge)."""
    manifest = json.loads((package / "manifest.json").read_text())
    archive = tmp_path / f"{package.name}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in ["manifest.json", *manifest["files"]]:
            data = (package / name).read_bytes()
            if name == grow:
                data += bytes(extra_bytes)
            info = tarfile.TarInfo(f"{package.name}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_an_archive_member_larger_than_the_manifest_says_is_refused_before_it_is_unpacked(
        cli, one_line_error, device: SshDevice, package: Path, tmp_path: Path):
    manifest = json.loads((package / "manifest.json").read_text())
    size = manifest["sizes"]["model.onnx"]
    assert size == (package / "model.onnx").stat().st_size
    archive = archive_with(package, tmp_path, "model.onnx", 64 * 2**20)
    assert archive.stat().st_size < 2**20
    one_line_error(cli(*deploy_args(device, archive, tmp_path / "r")),
                   f"model.onnx is {size + 64 * 2**20} bytes, more than the {size} manifest.json says it is")
    assert not (tmp_path / "r").exists()


def test_truncated_package_archive_is_one_line(cli, one_line_error, tmp_path: Path):
    package = tmp_path / "m-rpi4"
    package.mkdir()
    model = np.random.default_rng(0).bytes(100_000)
    (package / "model.onnx").write_bytes(model)
    (package / "manifest.json").write_text(json.dumps({  # a whole manifest: the archive's end is what is missing
        "files": {"model.onnx": hashlib.sha256(model).hexdigest()}, "sizes": {"model.onnx": len(model)}}))
    with tarfile.open(tmp_path / "m-rpi4.tar.gz", "w:gz") as tar:
        tar.add(package, arcname="m-rpi4")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes((tmp_path / "m-rpi4.tar.gz").read_bytes()[:40000])
    one_line_error(cli("deploy", truncated, "--device", "rpi4", "--host", "pi@127.0.0.1:9"),
                   "not a complete package archive")


def test_the_archive_edgepack_writes_deploys_and_starts_with_its_manifest(device: SshDevice, package: Path,
                                                                         tmp_path: Path, cli):
    archive = package.parent / f"{package.name}.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert names[0] == f"{package.name}/manifest.json"
    code, out, err = cli(*deploy_args(device, archive, tmp_path / "r"))
    assert code == 0 and "files verified by sha256 on the device; run.py sample.npy: top class" in out, err
    release = (tmp_path / "r" / "digits-host" / "current").resolve()
    manifest = json.loads((release / "manifest.json").read_text())
    assert all(hashlib.sha256((release / n).read_bytes()).hexdigest() == h for n, h in manifest["files"].items())


# -- concurrent deploys take the device's lock -------------------------------------------------------

def ssh_options(dev: SshDevice) -> SshOptions:
    return SshOptions((dev.target,), dev.known_hosts, dev.client_key, remote_python=dev.python,
                      ssh_config=dev.root / "no_ssh_config")


def release_is_complete(release: Path) -> bool:
    manifest = json.loads((release / "manifest.json").read_text())
    return all(hashlib.sha256((release / n).read_bytes()).hexdigest() == h for n, h in manifest["files"].items())


def test_three_concurrent_deploys_ten_rounds_current_is_always_complete(device: SshDevice, package: Path,
                                                                        tmp_path: Path):
    host = ProfileRegistry.discover([]).get("host")
    remote = tmp_path / "remote"
    waits: list[str] = []
    for _ in range(10):
        results: list[object] = []

        def deploy(results: list[object] = results) -> None:
            try:
                results.append(deploy_package(package, host, ssh_options(device), str(remote), say=waits.append)[0])
            except Exception as exc:  # collected: every deploy must succeed
                results.append(exc)

        threads = [threading.Thread(target=deploy) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(not isinstance(r, Exception) for r in results), results
        current = remote / "digits-host" / "current"
        assert current.is_symlink() and release_is_complete(current.resolve())
        assert any(current.resolve().name == Path(r.path).name for r in results)  # one of this round's
        releases = sorted(p.name for p in (remote / "digits-host" / "releases").iterdir())
        assert not [r for r in releases if r.startswith(".")] and 1 <= len(releases) <= 2
    assert any("the device is in use (deploying digits-host by" in w for w in waits)  # it waited, and said for whom
    assert not device.leftover_temp_dirs()
