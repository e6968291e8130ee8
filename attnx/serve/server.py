"""Start `tritonserver` on a model repository, wait until its models are ready, stop it cleanly.

The binary comes from $PATH (Triton's container: /opt/tritonserver/bin, its backends beside it) or
from the nvidia-pytriton wheel, launched the way pytriton launches it: the wheel's libraries on
LD_LIBRARY_PATH, and a backend folder holding the Python backend with the stub built for this
interpreter's version (the wheel ships one per Python version, pytriton copies the right one in).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

from attnx.errors import AttnxError, BackendUnavailableError, InputError
from attnx.serve import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_READY_TIMEOUT_S

STOP_TIMEOUT_S = 20.0
INSTALL_HINT = "pip install --no-deps nvidia-pytriton==0.7.0 (the bundled server), or run in Triton's container"


class ServerError(AttnxError):
    """tritonserver exited, or its models did not become ready in time."""


@dataclasses.dataclass(frozen=True)
class Tritonserver:
    """Where a tritonserver binary is and what it needs to run."""
    binary: Path
    backends: Path | None         # --backend-directory; None: the binary's own default
    stub: Path | None             # the Python backend stub to put in a backend folder made for this run
    library_path: Path | None     # prepended to LD_LIBRARY_PATH
    cache_directory: Path | None


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it (it needs zmq, typer …)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_tritonserver() -> Tritonserver:
    """tritonserver from $PATH, else from the nvidia-pytriton wheel; BackendUnavailableError when neither."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Tritonserver(Path(on_path), None, None, None, None)
    root = _wheel_root()
    looked = ["$PATH"]
    if root is not None:
        dist = root / "tritonserver"
        binary = dist / "bin" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        looked.append(str(binary))
        if binary.is_file() and stub.is_file():
            return Tritonserver(binary, dist / "backends", stub, root.parent / "nvidia_pytriton.libs", dist / "caches")
        if binary.is_file():
            raise BackendUnavailableError(f"found {binary}, but no Python backend stub for Python {version} at {stub}")
    raise BackendUnavailableError(f"expected a tritonserver binary, found none (looked in {', '.join(looked)}): "
                                  f"{INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _prepare_backends(found: Tritonserver, work: Path) -> Path | None:
    """The wheel's backend folder with the stub for this interpreter in python/, built in `work`."""
    if found.stub is None:
        return found.backends
    backends = work / "backends"
    shutil.copytree(found.backends, backends, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(found.stub, backends / "python" / "triton_python_backend_stub")
    return backends


class RunningServer:
    """A tritonserver process serving `repo`; `stop()` ends it (SIGINT, then SIGKILL after a bound)."""

    def __init__(self, process: subprocess.Popen, http_port: int, grpc_port: int, log_path: Path):
        self.process, self.http_port, self.grpc_port, self.log_path = process, http_port, grpc_port, log_path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)  # the server and the backend stubs it started
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def serve(repo: str | Path, *, http_port: int = DEFAULT_HTTP_PORT, grpc_port: int = DEFAULT_GRPC_PORT,
          metrics_port: int | None = None, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
          log_path: str | Path | None = None, on_wait: Callable[[float], None] = lambda elapsed: None,
          ) -> Iterator[RunningServer]:
    """Run tritonserver on `repo` (bound to 127.0.0.1) until the block ends; yields once every model is ready.

    `on_wait(seconds)` is called about once a second while waiting. ServerError when the server exits
    or is not ready within `ready_timeout_s` (with the tail of its log); the server is stopped however
    the block ends, so no process outlives it."""
    repo = Path(repo).resolve()
    if not repo.is_dir() or not any(repo.glob("*/config.pbtxt")):
        raise InputError(f"expected a Triton model repository at {repo} (folders holding config.pbtxt, from "
                         f"`attnx triton MODEL -o {repo}`), found {'no folder' if not repo.is_dir() else 'no model'}")
    found = find_tritonserver()
    with tempfile.TemporaryDirectory(prefix="attnx-tritonserver-") as tmp:
        work = Path(tmp)
        backends = _prepare_backends(found, work)
        env = dict(os.environ)
        if found.library_path is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(found.library_path),
                                                                   env.get("LD_LIBRARY_PATH")]))
        metrics_port = free_port() if metrics_port is None else metrics_port
        command = [str(found.binary), f"--model-repository={repo}", f"--http-port={http_port}",
                   f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}", "--http-address=127.0.0.1",
                   "--grpc-address=127.0.0.1", "--allow-metrics=false", "--disable-auto-complete-config",
                   "--exit-timeout-secs=5", "--strict-readiness=true"]
        if backends is not None:
            command.append(f"--backend-directory={backends}")
        if found.cache_directory is not None:
            command.append(f"--cache-directory={found.cache_directory}")
        log = Path(log_path) if log_path else work / "tritonserver.log"
        with open(log, "wb") as log_file:
            # a session of its own: stop() signals the server and the stubs together, and a Ctrl-C meant
            # for attnx reaches the server only through stop()
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = RunningServer(process, http_port, grpc_port, log)
        try:
            start = time.monotonic()
            ready_url = f"http://127.0.0.1:{http_port}/v2/health/ready"
            while not _ready(ready_url):
                if process.poll() is not None:
                    raise ServerError(f"tritonserver exited with status {process.returncode} before its models "
                                      f"were ready; its log ends:\n{server.log_tail()}")
                elapsed = time.monotonic() - start
                if elapsed > ready_timeout_s:
                    raise ServerError(f"expected the models of {repo} ready within {ready_timeout_s:g} s, found "
                                      f"them not ready; the log ends:\n{server.log_tail()}")
                on_wait(elapsed)
                time.sleep(0.5)
            yield server
        finally:
            server.stop()
