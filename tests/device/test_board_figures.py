"""A board's figures are checked before they are believed, and its measuring conditions judged.

The boards here are real sshd boards on loopback whose Python is a wrapper: it runs the real harness
and then lies about what it measured (negates, NaNs, reorders, drops runs), or it runs it on a "board"
whose firmware says it is throttled (a ``vcgencmd`` of its own on the PATH, as a Raspberry Pi has) or
whose cpufreq files say its cores run at 600 MHz (a mount namespace of its own over /sys's cpu folder).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgepack.runners.loopback import SshDevice

pytestmark = pytest.mark.device

# Rewrites the harness's last JSON line the way a broken or lying board would.
MANGLE = r'''
import json, sys
mode = sys.argv[1]
lines = sys.stdin.read().splitlines()
for i in range(len(lines) - 1, -1, -1):
    if lines[i].startswith("{"):
        data = json.loads(lines[i])
        lat = data.get("latency_ms")
        if isinstance(lat, dict):
            if mode == "negate":
                for k in ("p50", "p90", "p99", "mean", "min", "max"):
                    lat[k] = -lat[k]
                lat["runs"] = [-v for v in lat["runs"]]
            elif mode == "nan":
                lat["p50"] = float("nan")
            elif mode == "reorder":
                lat["p50"], lat["p90"] = lat["p90"] * 2, lat["p50"]
            elif mode == "huge":
                lat["p50"] = 1e308
            elif mode == "runs":
                lat["runs"] = lat["runs"][1:]
            elif mode == "made-up":
                lat["mean"] = lat["mean"] * 1.01
            elif mode == "rss":
                data["peak_rss_mb"] = -100
        lines[i] = json.dumps(data)
        break
print("\n".join(lines))
'''


def liar(dev: SshDevice, mode: str) -> Path:
    """A --remote-python that runs the real harness, then rewrites its figures."""
    folder = dev.root / f"liar-{mode}"
    folder.mkdir(exist_ok=True)
    (folder / "mangle.py").write_text(MANGLE)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nout=$("{dev.python}" "$@"); code=$?\n'
                       f'printf "%s\\n" "$out" | "{dev.python}" "{folder / "mangle.py"}" {mode}\nexit $code\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def ssh_args(dev: SshDevice, python: Path | str) -> list[str]:
    return ["--host", dev.target, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.client_key),
            "--remote-python", str(python)]


@pytest.mark.parametrize(("mode", "said"), [
    ("negate", "p50 -"), ("nan", "p50 nan ms: not a latency"), ("reorder", "out of order"),
    ("huge", "p50 1e+308 ms above p90"), ("runs", "4 runs sent, but runs_done 5"), ("made-up", "mean "),
    ("rss", "peak_rss_mb -100: not a memory figure")])
def test_profile_refuses_figures_a_board_makes_up(device: SshDevice, digits_onnx: Path, cli, mode: str,
                                                  said: str) -> None:
    code, out, err = cli("profile", digits_onnx, "--device", "host", "--runs", "5", "--warmup", "1", "--json",
                         *ssh_args(device, liar(device, mode)))
    assert code == 1 and "Traceback" not in err, err
    assert f"board {device.target}" in err and said in err, err
    data = json.loads(out)  # strict JSON: no NaN anywhere
    assert data["error"] and data["latency_ms"] == {}
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_a_lying_board_never_makes_a_record_nor_a_package(device: SshDevice, digits_onnx: Path, digits,
                                                         tmp_path: Path, cli) -> None:
    np.savez(tmp_path / "calib.npz", x=digits.x_train[:64])
    code, _out, err = cli("build", digits_onnx, "--device", "host", "--calib", tmp_path / "calib.npz",
                         "--formats", "onnx", "--precisions", "fp32", "--prune", "0", "--threads", "1",
                         "--runs", "5", "--warmup", "1", "--max-latency-ms", "0.001",
                         "--cache", tmp_path / "cache", "-o", tmp_path / "dist",
                         *ssh_args(device, liar(device, "negate")))
    assert code != 0 and "Traceback" not in err, err
    assert "not a latency" in err and f"board {device.target}" in err, err
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
    records = tmp_path / "cache" / "records.jsonl"
    lines = records.read_text().splitlines() if records.exists() else []
    assert not any("latency_ms" in line for line in lines), lines


def hot_board(dev: SshDevice, log: Path, flags: str = "0x50005") -> Path:
    """A --remote-python whose board's firmware says it is throttled (``vcgencmd get_throttled``); every
    harness invocation is logged, to count the measurements."""
    folder = dev.root / "hot"
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    vcgencmd = folder / "bin" / "vcgencmd"
    vcgencmd.write_text(f'#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled={flags}"\n')
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nPATH="{folder / "bin"}:$PATH" exec "{dev.python}" "$@"\n')
    for f in (vcgencmd, wrapper):
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return wrapper


def quick_profile(tmp_path: Path, name: str, base: str = "host") -> Path:
    """A copy of a shipped profile that cools down for 1 s, not 30, before measuring again."""
    from edgepack.profiles import BUILTIN_DIR

    text = (BUILTIN_DIR / f"{base}.toml").read_text()
    text = text.replace("[benchmark]\n", "[benchmark]\ncool_down_s = 1\nunstable_retries = 1\n", 1)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_a_throttled_board_is_measured_again_then_labelled_unstable(device: SshDevice, digits_onnx: Path,
                                                                   tmp_path: Path, cli) -> None:
    log = tmp_path / "calls.log"
    profile = quick_profile(tmp_path, "hot-host")
    code, out, err = cli("profile", digits_onnx, "--device", "hot-host", "--profile", profile, "--runs", "10",
                         "--warmup", "1", "--json", *ssh_args(device, hot_board(device, log)))
    assert code == 0, err
    data = json.loads(out)
    assert data["conditions"]["throttled"] == [0x50005, 0x50005]
    assert data["conditions"]["throttled_source"] == "vcgencmd"
    assert "throttled 0x50005 (under-voltage, throttled)" in data["conditions_line"]
    assert any("throttled (under-voltage, throttled" in why for why in data["unstable"]), data["unstable"]
    timed = [line for line in log.read_text().splitlines() if "--model" in line and "--describe" not in line]
    assert len(timed) == 2, timed  # measured, cooled down, measured again: still throttled
    assert "measured while throttled" in err and "UNSTABLE" in err
    code, table, _ = cli("profile", digits_onnx, "--device", "hot-host", "--profile", profile, "--runs", "10",
                         "--warmup", "1", *ssh_args(device, hot_board(device, log)))
    assert "conditions: " in table and "UNSTABLE after 2 attempt(s)" in table


def test_a_board_that_was_throttled_once_is_not_unstable_now(device: SshDevice, digits_onnx: Path,
                                                            tmp_path: Path, cli) -> None:
    """Bits 16-19 say "since boot": recorded, not judged."""
    code, out, err = cli("profile", digits_onnx, "--device", "host", "--runs", "10", "--warmup", "1", "--json",
                         *ssh_args(device, hot_board(device, tmp_path / "calls.log", "0x50000")))
    data = json.loads(out)
    assert code == 0 and data["unstable"] == [] and "not throttled" in data["conditions_line"], err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_under_clocked_cores_against_the_profile(device: SshDevice, digits_onnx: Path, tmp_path: Path, cli) -> None:
    """The cores' cpufreq files say 600 MHz on an rpi4 profile (1.5 GHz): unstable, and said why."""
    cpus = " ".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    wrapper = tmp_path / "slow-python"
    wrapper.write_text(
        "#!/bin/sh\nexec unshare --mount --propagation private sh -c '"
        "mount -t tmpfs slow /sys/devices/system/cpu && "
        f"for c in {cpus}; do d=/sys/devices/system/cpu/cpu$c/cpufreq; mkdir -p $d; echo ondemand > "
        "$d/scaling_governor; echo 600000 > $d/scaling_cur_freq; echo 1500000 > $d/cpuinfo_max_freq; "
        f"echo 1500000 > $d/scaling_max_freq; done; exec \"$0\" \"$@\"' \"{device.python}\" \"$@\"\n")
    wrapper.chmod(0o755)
    probe = subprocess.run([str(wrapper), "-c", "print(open('/sys/devices/system/cpu/cpu0/cpufreq/"
                            "scaling_cur_freq').read())"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.strip()[:200]}")
    profile = quick_profile(tmp_path, "slow-rpi4", "rpi4")
    code, out, err = cli("profile", digits_onnx, "--device", "slow-rpi4", "--profile", profile, "--runs", "10000",
                         "--warmup", "1", "--threads", "1", "--json", *ssh_args(device, wrapper))
    data = json.loads(out)
    assert code == 0, err
    assert data["conditions"]["governor"] == ["ondemand"] and set(data["conditions"]["cur_khz"]) == {600000}
    assert any("under-clocked: the cores ran at 0.60 GHz, the profile's clock is 1.5 GHz" in why
               for why in data["unstable"]), data["unstable"]


def test_a_model_too_large_for_the_board_is_the_users_to_fix(device: SshDevice, tmp_path: Path, cli) -> None:
    """A board with 2.5 GB of address space and a model that asks for 6.4 GB: exit 2, one line saying so."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [40000, 40000])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [shape])
    model = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    small = tmp_path / "small-python"
    small.write_text(f'#!/bin/sh\nulimit -v 2500000\nexec "{device.python}" "$@"\n')
    small.chmod(0o755)
    code, out, err = cli("profile", model, "--device", "host", "--runs", "1", "--warmup", "0",
                         *ssh_args(device, small))
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"edgepack: error: {model} is too large for the memory of {device.target}"), err
    assert "ran out of memory" in out
