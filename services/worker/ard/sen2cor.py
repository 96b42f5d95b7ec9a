"""Atmospheric correction of an L1C scene with ESA's Sen2Cor, as the original workflow ran it.

Sen2Cor is installed separately (ESA's `Sen2Cor-02.xx.xx-Linux64.run`); the worker finds it
through `SEN2COR_8` (or `CONVEYOR_SEN2COR_COMMAND`): the `L2A_Process` program, its install
folder, or a command line. It runs as `L2A_Process <L1C .SAFE> --output_dir <dir>` and leaves an
`..._MSIL2A_....SAFE` folder there, which is then read like any L2A product.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from pathlib import Path

import structlog

from services.worker.ard.errors import Sen2CorFailed, Sen2CorNotConfigured
from shared.messages import SENTINEL2_SCENE

log = structlog.get_logger(__name__)

PROGRAM = "L2A_Process"
OUTPUT_TAIL_CHARS = 1500


def sen2cor_command(configured: str | None) -> list[str]:
    """The command line that runs Sen2Cor; `Sen2CorNotConfigured` when there is none."""
    if not configured or not configured.strip():
        raise Sen2CorNotConfigured(
            "this is an L1C scene and L2A was asked for, but no atmospheric correction is "
            "configured: install Sen2Cor and set SEN2COR_8 to its L2A_Process (or send an L2A "
            "scene)"
        )
    path = Path(configured.strip()).expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / PROGRAM, path / PROGRAM):
            if candidate.is_file():
                return [str(candidate)]
        raise Sen2CorNotConfigured(
            f"SEN2COR_8 names the folder {path}, which holds no bin/{PROGRAM}; point it at "
            "Sen2Cor's L2A_Process"
        )
    if path.is_file():
        return [str(path)]
    command = shlex.split(configured)
    if not command:
        raise Sen2CorNotConfigured("SEN2COR_8 is empty; point it at Sen2Cor's L2A_Process")
    return command


def find_l2a_output(output_dir: Path, l1c_name: str) -> Path:
    """The L2A `.SAFE` Sen2Cor made from `l1c_name`: same mission, sensing time and tile."""
    match = SENTINEL2_SCENE.match(l1c_name)
    if match is None:
        raise Sen2CorFailed(f"{l1c_name!r} is not a Sentinel-2 product name")
    mission = l1c_name[:3]
    pattern = f"{mission}_MSIL2A_{match.group('sensing')}_N*_R*_T{match.group('tile')}_*.SAFE"
    found = sorted(path for path in output_dir.glob(pattern) if path.is_dir())
    if len(found) != 1:
        made = ", ".join(sorted(path.name for path in output_dir.iterdir())) or "nothing"
        raise Sen2CorFailed(
            f"Sen2Cor finished but left {len(found)} L2A products matching {pattern} in "
            f"{output_dir} (it made: {made})"
        )
    return found[0]


async def run_sen2cor(command: list[str], l1c_safe: Path, output_dir: Path) -> Path:
    """Run Sen2Cor on `l1c_safe`; returns the L2A `.SAFE` folder it made in `output_dir`."""
    await asyncio.to_thread(output_dir.mkdir, parents=True, exist_ok=True)
    arguments = [*command, str(l1c_safe), "--output_dir", str(output_dir)]
    log.info("sen2cor.started", command=arguments)
    try:
        process = await asyncio.create_subprocess_exec(
            *arguments,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as error:
        raise Sen2CorNotConfigured(
            f"cannot run Sen2Cor ({shlex.join(command)}): {error}; check SEN2COR_8"
        ) from None
    try:
        output, _ = await process.communicate()
    except asyncio.CancelledError:
        # The worker is stopping: Sen2Cor must not outlive the job it was run for.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    tail = text[-OUTPUT_TAIL_CHARS:].strip()
    code = process.returncode
    if code is not None and code < 0:
        # Killed by a signal (out of memory, a node drain): another attempt may well succeed.
        raise RuntimeError(f"Sen2Cor was killed by signal {-code}; last output: {tail}")
    if code != 0:
        raise Sen2CorFailed(f"Sen2Cor exited with status {code} on {l1c_safe.name}: {tail}")
    log.info("sen2cor.finished", output_dir=str(output_dir))
    return find_l2a_output(output_dir, l1c_safe.name.removesuffix(".SAFE"))
