from __future__ import annotations

import pytest

from edgepack.runners.emulated import EmulatedBoard

pytestmark = pytest.mark.arm


@pytest.fixture(scope="session")
def arm_board(tmp_path_factory: pytest.TempPathFactory):
    """The emulated Raspberry Pi OS board (Debian 12 arm64, its own Python 3.11, numpy 1.24,
    tflite-runtime and onnxruntime), built once and cached; started for the session."""
    board = EmulatedBoard.start(tmp_path_factory.mktemp("arm-board"), say=lambda _: None)
    yield board
    board.stop()
