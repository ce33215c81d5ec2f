"""A pool of boards of one profile: requests spread over them, one benchmark at a time per board."""

from __future__ import annotations

import queue
import threading

from edgepack.runners.base import Measurement, Runner, RunRequest


class DevicePool(Runner):
    def __init__(self, runners: list[Runner]) -> None:
        if not runners:
            raise ValueError("a pool needs at least one runner")
        self.runners = runners
        self.label = ", ".join(r.label for r in runners)

    def run(self, requests: list[RunRequest]) -> list[Measurement]:
        if len(self.runners) == 1:
            return self.runners[0].run(requests)
        todo: queue.Queue[tuple[int, RunRequest]] = queue.Queue()
        for item in enumerate(requests):
            todo.put(item)
        results: list[Measurement | None] = [None] * len(requests)
        errors: list[BaseException] = []

        def work(runner: Runner) -> None:
            while not errors:
                try:
                    index, request = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[index] = runner.run([request])[0]
                except BaseException as exc:  # a user error (e.g. host key) stops the pool; re-raised below
                    errors.append(exc)

        threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in self.runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return [m for m in results if m is not None]

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
