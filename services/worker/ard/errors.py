"""Why a scene cannot be made into ARD: each a `Permanent` (or `InvalidRequest`) with its own
dead-letter reason, so `conveyor dead list` groups them by what a person has to do."""

from __future__ import annotations

from shared.errors import InvalidRequest, Permanent


class BadSceneRequest(InvalidRequest):
    """The item itself is wrong: a malformed name, an inter_dir outside the scratch root."""

    reason = "invalid_request"


class Sen2CorNotConfigured(Permanent):
    """An L1C scene needs Sen2Cor for L2A, and this worker has none."""

    reason = "sen2cor_not_configured"


class Sen2CorFailed(Permanent):
    """Sen2Cor ran and gave no L2A product."""

    reason = "sen2cor_failed"


class SceneNotFound(Permanent):
    """The archive holds no `.SAFE` folder, `.zip`, tarball or scene folder for the scene."""

    reason = "scene_not_found"


class CorruptScene(Permanent):
    """The product is there but broken: unreadable metadata, a missing or corrupt band file."""

    reason = "corrupt_scene"


class UnsupportedCollection(Permanent):
    """A Landsat download this pool cannot make surface reflectance of: Level-1 only (no
    atmospheric correction is configured for Landsat), or a mission without a product here."""

    reason = "unsupported_collection"
