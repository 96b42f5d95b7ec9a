"""The scratch directory of one scene: checked to lie under the scratch root, always cleaned.

An item's `inter_dir` names the working directory, as in the original workflow. It must lie
under `CONVEYOR_SCRATCH_ROOT` (a relative one is taken relative to it), so that no work item
can make a worker write, or wipe, anything else. Each job works in its own folder inside
(`{inter_dir}/{scene}.{job id}`), so several worker processes can share one `inter_dir`; that
folder is removed when the job ends, whether it succeeded or not, and a folder a killed worker
left behind is removed by the next attempt of the same job before it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from services.worker.ard.errors import BadSceneRequest


def scratch_directory(inter_dir: str, scratch_root: Path) -> Path:
    """`inter_dir` resolved, if it lies under `scratch_root`; `BadSceneRequest` otherwise."""
    root = Path(os.path.abspath(scratch_root.expanduser()))
    text = inter_dir.strip()
    if not text or "\x00" in text:
        raise BadSceneRequest(f"inter_dir {inter_dir!r} is not a directory path")
    requested = Path(text).expanduser()
    candidate = requested if requested.is_absolute() else root / requested
    # Resolved through symbolic links, so a link inside the root cannot lead outside it.
    resolved = candidate.resolve(strict=False)
    resolved_root = root.resolve(strict=False)
    if resolved != resolved_root and not resolved.is_relative_to(resolved_root):
        raise BadSceneRequest(
            f"inter_dir {inter_dir!r} is outside the scratch root {resolved_root} "
            "(CONVEYOR_SCRATCH_ROOT); send a directory under it, or set CONVEYOR_SCRATCH_ROOT "
            "to the volume the work items name"
        )
    return resolved


def job_folder(inter_dir: Path, scene: str, job_id: str) -> Path:
    return inter_dir / f"{scene}.{job_id[:16]}"


def fresh_folder(folder: Path) -> Path:
    """An empty `folder`, removing what an earlier, killed attempt left there."""
    remove_folder(folder)
    folder.mkdir(parents=True)
    return folder


def remove_folder(folder: Path) -> None:
    if folder.is_symlink():
        folder.unlink()
        return
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
