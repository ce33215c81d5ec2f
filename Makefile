# edgepack: `make demo` sets everything up and runs the main job on the bundled example;
# `make test` sets everything up and runs the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgepack-installed

.PHONY: demo test lint install device-deps clean

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

# The main job on the bundled example: the digits CNN, calibrated on 300 training images and checked
# on the 360 held-out ones (scikit-learn's bundled digits, no download), built for this machine.
demo: $(STAMP)
	$(BIN)/edgepack devices
	$(BIN)/python -m edgepack.examples.digits --data dist/demo-data
	$(BIN)/edgepack build edgepack/examples/digits_cnn.onnx --device host \
		--calib dist/demo-data/calib.npz --eval dist/demo-data/eval.npz -o dist
	@echo "package: $$(pwd)/dist/digits_cnn-host (and dist/digits_cnn-host.tar.gz)"

test: $(STAMP) device-deps
	$(BIN)/ruff check edgepack tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check edgepack tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
