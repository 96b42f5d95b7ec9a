"""Running the real services as processes in tests, and waiting for outcomes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.embedded import free_port

REPO = Path(__file__).resolve().parents[1]


def service_env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CONVEYOR_") and key not in ("REDIS_SERVICE_HOST",)
    }
    env.update(
        CONVEYOR_REDIS_URL=redis_url,
        CONVEYOR_NAMESPACE=namespace,
        CONVEYOR_METRICS_PORT=str(free_port()),
        CONVEYOR_LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class ServiceProcess:
    def __init__(self, module: str, env: dict[str, str], args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.metrics_port = int(env["CONVEYOR_METRICS_PORT"])
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"did not stop within {timeout}s on SIGTERM") from None
        return int(self.process.returncode)

    @property
    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.kill()
        self._log.close()


@contextmanager
def running_service(
    module: str, env: dict[str, str], log_path: Path, args: list[str] | None = None
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(module, env, args or [], log_path)
    try:
        yield service
    finally:
        service.close()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 60.0, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def pending_entries(redis: object, stream: str, group: str) -> int | None:
    """Pending entries of a group, or None while the group does not exist yet."""
    from redis.exceptions import ResponseError

    try:
        summary = await redis.xpending(stream, group)  # type: ignore[attr-defined]
    except ResponseError:
        return None
    return int(summary["pending"])


async def wait_ready(service: ServiceProcess, timeout: float = 60.0) -> None:
    """Until the service answers on /healthz (its signal handlers are installed by then)."""
    import urllib.error
    import urllib.request

    async def answers() -> bool:
        if service.process.poll() is not None:
            raise AssertionError(f"the service exited early:\n{service.output[-3000:]}")
        try:
            url = f"http://127.0.0.1:{service.metrics_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    await wait_until(answers, timeout=timeout, interval=0.1)
