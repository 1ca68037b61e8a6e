"""`facemask serve` in a real subprocess on 127.0.0.1, for tests, benchmarks and the documentation's examples:
started with ``--port 0``, ready once it prints its URL, stopped with SIGTERM (whose exit status the caller may
check). The subprocess imports the same package as the caller (its folder leads ``PYTHONPATH``)."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

READY_PREFIX = "serving on "


class ServedFaceMask:
    """A context manager around one `facemask serve --model MODEL [--gallery G] --port 0 [extra args]` process."""

    def __init__(self, model: str | os.PathLike, *, gallery: str | os.PathLike | None = None,
                 args: Sequence[str] = (), env: dict[str, str] | None = None,
                 start_timeout_s: float = 300.0) -> None:
        self.command = [sys.executable, "-m", "modelscope_facemask.cli", "serve", "--model", str(model),
                        "--port", "0", "--device", "cpu", *args]
        if gallery is not None:
            self.command += ["--gallery", str(gallery)]
        self.start_timeout_s = start_timeout_s
        self.env = dict(env or {})
        self.url = ""
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> "ServedFaceMask":
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join([root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **self.env)
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=env)
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            try:
                line = self._lines.get(timeout=self.start_timeout_s)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"facemask serve printed no URL in {self.start_timeout_s} s:\n" + self.output)
            if line is None:
                raise RuntimeError(f"facemask serve exited with {self.process.wait()}:\n" + self.output)
            if line.startswith(READY_PREFIX):
                self.url = line[len(READY_PREFIX):].split()[0].rstrip("/")
                return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._lines.put(line.strip())
        self._lines.put(None)

    @property
    def output(self) -> str:
        """Everything the server printed so far."""
        return "".join(self.lines)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit status (kills after ``timeout_s``)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
