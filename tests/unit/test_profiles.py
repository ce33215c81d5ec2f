from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.errors import ProfileError, UnknownDeviceError
from edgepack.profiles import BUILTIN_DIR, ProfileRegistry, load_profile

REQUIRED = {"rpi4", "rpi5", "rpi-zero-2w", "android-gpu", "coral-edgetpu", "host", "alif-e7", "imx93", "stm32h7",
            "esp32-s3"}


def test_builtin_profiles_all_validate():
    registry = ProfileRegistry.discover()
    assert set(registry.names()) >= REQUIRED
    for profile in registry.all():
        assert profile.roofline.source and profile.ops.source
        mcu = profile.microcontroller
        if mcu is None:
            assert profile.memory_budget_mb <= profile.ram_mb
        else:  # a microcontroller's size budget is its flash, less the firmware's
            assert mcu.source and profile.memory_budget_mb * 1024 <= mcu.model_flash_kb


def test_toolchain_profiles_name_their_toolchains():
    registry = ProfileRegistry.discover()
    alif, imx93 = registry.get("alif-e7"), registry.get("imx93")
    assert alif.compiler == imx93.compiler == "vela"
    assert alif.vela.accelerator.startswith("ethos-u55") and imx93.vela.accelerator.startswith("ethos-u65")
    assert imx93.vela.delegate and not imx93.is_microcontroller and imx93.ssh.user == "root"
    for name in ("alif-e7", "stm32h7", "esp32-s3"):
        profile = registry.get(name)
        assert profile.runtimes == ["tflite-micro"] and profile.precisions.io_dtypes == ["int8"]
    assert registry.get("stm32h7").microcontroller.gcc_flags[0] == "-mcpu=cortex-m7"
    assert registry.get("esp32-s3").microcontroller.gcc_flags == []  # Xtensa: not arm-none-eabi's
    assert registry.get("android-gpu").gpu_check == "tflite-analyzer"


def test_a_vela_profile_without_its_section_is_refused(tmp_path: Path):
    path = _write_profile(tmp_path / "npu.toml", '\ncompiler = "vela"\n')
    path.write_text(path.read_text().replace('runtimes = ["tflite", "onnxruntime"]',
                                             'runtimes = ["tflite", "onnxruntime"]\ncompiler = "vela"')
                    .rsplit('compiler = "vela"', 1)[0])
    with pytest.raises(ProfileError, match=r"needs a \[vela\] section"):
        load_profile(path)


def test_profile_classes_and_requirements():
    registry = ProfileRegistry.discover()
    coral = registry.get("coral-edgetpu")
    assert coral.device_class == "npu"
    assert coral.precisions.required == ["int8"]
    assert set(coral.precisions.io_dtypes) == {"int8", "uint8"}
    assert coral.on_chip_memory_mb == 8
    assert isinstance(coral.ops.tflite, list) and "CONV_2D" in coral.ops.tflite
    assert registry.get("android-gpu").device_class == "gpu"
    assert "fp16" in registry.get("android-gpu").precisions.supported
    for name in ("rpi4", "rpi5", "rpi-zero-2w"):
        assert registry.get(name).architecture == "aarch64"


def _write_profile(path: Path, extra: str = "", drop: str = "") -> Path:
    text = (BUILTIN_DIR / "rpi4.toml").read_text()
    if drop:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(drop))
    path.write_text(text + extra)
    return path


def test_unknown_key_names_file_and_key(tmp_path: Path):
    path = _write_profile(tmp_path / "myboard.toml", "\n[benchmark2]\nruns = 3\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and "benchmark2" in message and "unknown key" in message


def test_unknown_nested_key_names_dotted_key(tmp_path: Path):
    path = _write_profile(tmp_path / "b.toml")
    path.write_text(path.read_text().replace("threads = 4", "threads = 4\nthreadz = 2"))
    with pytest.raises(ProfileError, match=r"benchmark\.threadz: unknown key"):
        load_profile(path)


def test_bad_value_and_missing_key(tmp_path: Path):
    path = _write_profile(tmp_path / "c.toml")
    path.write_text(path.read_text().replace('class = "cpu"', 'class = "fpga"'))
    with pytest.raises(ProfileError, match=r"c\.toml: class"):
        load_profile(path)
    missing = _write_profile(tmp_path / "d.toml", drop="cores")
    with pytest.raises(ProfileError, match=r"d\.toml: cores: Field required"):
        load_profile(missing)


def test_bad_toml(tmp_path: Path):
    path = tmp_path / "e.toml"
    path.write_text("cores = = 4\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(path)


def test_user_dir_and_extra_file_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    user_dir = tmp_path / "config" / "edgepack" / "devices"
    user_dir.mkdir(parents=True)
    _write_profile(user_dir / "lab-pi.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    extra = tmp_path / "rpi4.toml"
    extra.write_text((BUILTIN_DIR / "rpi4.toml").read_text().replace("threads = 4", "threads = 2"))
    registry = ProfileRegistry.discover([extra])
    assert registry.get("lab-pi").path.parent == user_dir
    assert registry.get("rpi4").benchmark.threads == 2


def test_unknown_device_suggests_close_match():
    with pytest.raises(UnknownDeviceError) as info:
        ProfileRegistry.discover().get("rpi-zero2w")
    assert info.value.suggestion == "rpi-zero-2w"
    assert "did you mean 'rpi-zero-2w'" in str(info.value)
