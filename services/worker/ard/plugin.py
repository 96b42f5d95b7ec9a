"""The scene plugin interface: one module per mission turns its scenes into analysis-ready data.

The runner owns everything that is the same for every mission: the scratch directory (checked,
cleaned), the commit check, fetching from the archive, writing to the output in commit order
and indexing. A plugin owns what a mission is: which scene names it takes, what to refuse up
front, how its products are named in the archive, any preparation (Sen2Cor for L1C), and how a
product becomes COGs plus an eo3 document and a STAC item. See docs/scene-plugins.md.

    @register_scene_plugin
    class Landsat8Collection2(ScenePlugin):
        name = "landsat-c2-l2"
        product = "ls8_c2l2_sr"
        def accepts(self, scene: str) -> bool: ...
        def output_name(self, request: SceneRequest) -> str: ...
        def archive_candidates(self, request: SceneRequest) -> tuple[str, ...]: ...
        def make_ard(self, folder, request, out_dir, context) -> ArdProduct: ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from services.worker.ard.fetch import FetchedScene
from services.worker.outputs.spec import CogOptions
from services.worker.settings import WorkerSettings
from shared.messages import SceneRequest

METADATA_SUFFIX = ".odc-metadata.yaml"
STAC_SUFFIX = ".stac-item.json"


def metadata_file_name(output_name: str) -> str:
    """The eo3 document: written last, its presence means the scene is done."""
    return f"{output_name}{METADATA_SUFFIX}"


def stac_file_name(output_name: str) -> str:
    return f"{output_name}{STAC_SUFFIX}"


@dataclass(frozen=True)
class ArdContext:
    """What the runner tells a plugin about the scene being made."""

    output_name: str
    folder_url: str
    source_url: str
    processed: datetime
    threads: int
    cog: CogOptions

    def url_of(self, file_name: str) -> str:
        return f"{self.folder_url.rstrip('/')}/{file_name}"


@dataclass(frozen=True)
class ArdFile:
    """One file of the ARD product, made in scratch, to be stored as `name` in its folder."""

    name: str
    path: Path
    media_type: str


@dataclass(frozen=True)
class ArdProduct:
    """A made product: its files (written first), STAC item, and eo3 document (written last)."""

    dataset_id: UUID
    files: tuple[ArdFile, ...]
    stac_item: dict[str, Any]
    eo3_document: dict[str, Any]


class ScenePlugin(ABC):
    """One mission's scenes. Methods other than `prepare` block and are run in a thread."""

    name: ClassVar[str]
    # The datacube product the ARD is indexed as.
    product: ClassVar[str]

    @abstractmethod
    def accepts(self, scene: str) -> bool:
        """Whether `scene` (a request's `in_scene`) is a scene of this mission."""

    def check(self, request: SceneRequest, settings: WorkerSettings) -> None:
        """Refuse, before any I/O, what can never succeed here (raise InvalidRequest/Permanent)."""
        return None

    @abstractmethod
    def output_name(self, request: SceneRequest) -> str:
        """The ARD's name: its folder under the output and the stem of its files."""

    @abstractmethod
    def archive_candidates(self, request: SceneRequest) -> tuple[str, ...]:
        """Names to look for at the archive's top level, first match wins; folders end in `/`."""

    async def prepare(
        self, fetched: FetchedScene, request: SceneRequest, workdir: Path, settings: WorkerSettings
    ) -> Path:
        """Anything to run before `make_ard` (e.g. atmospheric correction); returns the folder
        `make_ard` reads. Runs on the event loop: start long work as a subprocess or thread."""
        return fetched.folder

    @abstractmethod
    def make_ard(
        self, folder: Path, request: SceneRequest, out_dir: Path, context: ArdContext
    ) -> ArdProduct:
        """Read the product in `folder`, write its files into `out_dir`, describe them."""


Plugin = TypeVar("Plugin", bound=type[ScenePlugin])
_REGISTRY: dict[str, type[ScenePlugin]] = {}


def register_scene_plugin(plugin: Plugin) -> Plugin:
    """Class decorator: make the plugin available to every `SceneRunner` created afterwards."""
    existing = _REGISTRY.get(plugin.name)
    if existing is not None and existing is not plugin:
        raise ValueError(f"a scene plugin named {plugin.name!r} is registered already")
    _REGISTRY[plugin.name] = plugin
    return plugin


def registered_scene_plugins() -> dict[str, type[ScenePlugin]]:
    return dict(_REGISTRY)
