# edgepack: `make demo` sets everything up and runs the main job on the bundled example;
# `make test` sets everything up and runs the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgepack-installed

.PHONY: demo test lint install device-deps mcu-deps browser-deps board-deps board-image board board-stop clean

install: $(STAMP)

# torch is pinned and installed first: this machine carries the CPU wheel of 2.13.0 on disk, and a
# looser requirement resolved later would pull a multi-GB CUDA build. tf-keras goes in with --no-deps
# because its metadata asks for a tensorflow (not tensorflow-cpu) it does not need.
# Everything else is pinned by requirements/constraints.txt: without pins, pip's resolver gives up
# ("resolution-too-deep") on litert-torch's large dependency tree.
$(STAMP): pyproject.toml Makefile requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[all,dev]'
	$(BIN)/python -m pip install -q --no-deps tf-keras==2.21.0
	touch $(STAMP)

# The test "device" is a real OpenSSH server on loopback.
device-deps:
	@test -x /usr/sbin/sshd || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null)

# The tests open report.html in a real browser (headless Chromium, Debian's build).
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Microcontroller firmware sources are compiled for Cortex-M with Arm's GNU toolchain (Debian's build),
# and for this machine with g++ (the tests check the C array's bytes).
mcu-deps:
	@test -x /usr/bin/arm-none-eabi-g++ -a -x /usr/bin/g++ || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-arm-none-eabi g++ >/dev/null)

# The emulated Raspberry Pi OS board (Debian 12 arm64 under qemu-user, edgepack/runners/emulated.py):
# root only. binfmt_misc is mounted first, so that installing qemu-user-static registers qemu-aarch64.
board-deps:
	@test -e /proc/sys/fs/binfmt_misc/status || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	@test -x /usr/bin/qemu-aarch64-static -a -x /usr/sbin/debootstrap -a -x /usr/sbin/update-binfmts || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		 qemu-user-static binfmt-support debootstrap >/dev/null)
	@test -e /proc/sys/fs/binfmt_misc/qemu-aarch64 || update-binfmts --enable qemu-aarch64

# Built once (debootstrap, about 7 minutes) and cached in ~/.cache/edgepack/boards/.
board-image: $(STAMP) board-deps
	$(BIN)/python -m edgepack.runners.emulated image

# Starts a board and prints the flags that reach it; `make board-stop` ends it.
board: board-image
	$(BIN)/python -m edgepack.runners.emulated start

board-stop:
	$(BIN)/python -m edgepack.runners.emulated stop

# The main job on the bundled example: the digits CNN, calibrated on 300 training images and checked
# on the 360 held-out ones (scikit-learn's bundled digits, no download), built for this machine.
demo: $(STAMP)
	$(BIN)/edgepack devices
	$(BIN)/python -m edgepack.examples.digits --data dist/demo-data
	$(BIN)/edgepack build edgepack/examples/digits_cnn.onnx --device host \
		--calib dist/demo-data/calib.npz --eval dist/demo-data/eval.npz -o dist
	@echo "archive: $$(pwd)/dist/digits_cnn-host.tar.gz; report: $$(pwd)/dist/digits_cnn-host/report.html"

test: $(STAMP) device-deps mcu-deps browser-deps board-image
	$(BIN)/ruff check edgepack tests benchmarks && $(BIN)/mypy
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# mypy: edgepack/api.py --strict (pyproject.toml's [tool.mypy]); cached in .mypy_cache, seconds after the first run.
lint: $(STAMP)
	$(BIN)/ruff check edgepack tests benchmarks && $(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
