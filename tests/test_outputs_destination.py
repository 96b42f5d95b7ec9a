"""Destinations: a local directory and a real S3 server (moto over HTTP), settings, and secrets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from services.worker.outputs.destination import (
    LocalDestination,
    S3Destination,
    check_key,
    destination_from_url,
)
from services.worker.outputs.settings import MIB, S3Settings, parse_output_url
from services.worker.outputs.spec import CogOptions
from services.worker.settings import WorkerSettings
from shared.embedded import free_port
from shared.errors import Permanent, Retryable
from tests.test_outputs_support import bucket_name, new_bucket

SECRET = "testing-secret"
KEY_ID = "testing-key"


def s3_settings(endpoint: str, **changes: object) -> S3Settings:
    return S3Settings(aws_s3_endpoint_url=endpoint, aws_virtual_hosting=False, **changes)  # type: ignore[arg-type]


async def test_a_local_put_appears_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    destination = LocalDestination(tmp_path)

    size = await destination.put("a/b/c.tif", b"pixels")
    source = tmp_path / "outside.bin"
    source.write_bytes(b"from a file")
    copied = await destination.put("a/b/d.bin", source)

    assert (size, copied) == (6, 11)
    assert await destination.exists("a/b/c.tif")
    assert not await destination.exists("a/b/missing.tif")
    assert await destination.read_text("a/b/d.bin") == "from a file"
    assert sorted(path.name for path in (tmp_path / "a/b").iterdir()) == ["c.tif", "d.bin"]
    assert destination.url_for("a/b/c.tif") == (tmp_path / "a/b/c.tif").as_uri()


async def test_a_local_put_replaces_an_earlier_file(tmp_path: Path) -> None:
    destination = LocalDestination(tmp_path)
    await destination.put("x.txt", b"first, longer contents")

    await destination.put("x.txt", b"second")

    assert await destination.read_text("x.txt") == "second"


async def test_reading_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await LocalDestination(tmp_path).read_text("nothing/here.yaml")


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../b", "a//b", "./a", "a\\b"])
def test_keys_that_could_escape_the_root_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="not a relative key"):
        check_key(key)


@pytest.mark.usefixtures("aws_credentials")
async def test_s3_round_trip_against_a_real_server(s3_endpoint: str) -> None:
    async with S3Destination.from_settings(
        bucket_name(), s3_settings(s3_endpoint), prefix="root/sub"
    ) as destination:
        await new_bucket(destination)

        size = await destination.put("p/q.yaml", b"id: 1\n", content_type="text/yaml")

        assert size == 6
        assert await destination.exists("p/q.yaml")
        assert not await destination.exists("p/other.yaml")
        assert await destination.read_text("p/q.yaml") == "id: 1\n"
        assert destination.url_for("p/q.yaml") == f"s3://{destination.bucket}/root/sub/p/q.yaml"
        client = await destination.client()
        head = await client.head_object(Bucket=destination.bucket, Key="root/sub/p/q.yaml")
        assert head["ContentType"] == "text/yaml"
        with pytest.raises(FileNotFoundError):
            await destination.read_text("p/other.yaml")


@pytest.mark.usefixtures("aws_credentials")
async def test_large_objects_go_up_in_parts(s3_endpoint: str, tmp_path: Path) -> None:
    settings = s3_settings(
        s3_endpoint, s3_multipart_threshold_bytes=1 * MIB, s3_multipart_part_bytes=5 * MIB
    )
    payload = os.urandom(11 * MIB)
    source = tmp_path / "big.tif"
    source.write_bytes(payload)
    async with S3Destination.from_settings(bucket_name(), settings) as destination:
        await new_bucket(destination)

        await destination.put("from-bytes.tif", payload)
        await destination.put("from-file.tif", source)
        await destination.put("small.tif", b"x" * 1000)

        client = await destination.client()
        for key in ("from-bytes.tif", "from-file.tif"):
            head = await client.head_object(Bucket=destination.bucket, Key=key)
            assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
            assert await destination.read_bytes(key) == payload
        small = await client.head_object(Bucket=destination.bucket, Key="small.tif")
        assert "-" not in small["ETag"]
        uploads = await client.list_multipart_uploads(Bucket=destination.bucket)
        assert uploads.get("Uploads", []) == []


@pytest.mark.usefixtures("aws_credentials")
async def test_a_missing_bucket_is_a_permanent_error_naming_it(s3_endpoint: str) -> None:
    async with S3Destination.from_settings("no-such-bucket-here", s3_settings(s3_endpoint)) as dest:
        with pytest.raises(Permanent, match="no-such-bucket-here"):
            await dest.put("a.tif", b"data")


@pytest.mark.usefixtures("aws_credentials")
async def test_an_unreachable_endpoint_is_worth_a_retry() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = s3_settings(endpoint, s3_max_attempts=1)
    async with S3Destination.from_settings("bucket", settings) as destination:
        with pytest.raises(Retryable, match="cannot reach S3"):
            await destination.exists("a.tif")


def test_s3_settings_read_the_original_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    monkeypatch.setenv("CONVEYOR_OUTPUT_URL", "s3://public-eo-data/products")

    settings = S3Settings()
    output = WorkerSettings()

    assert settings.aws_region == "eu-west-2"
    assert settings.aws_s3_endpoint_url == "http://minio:9000"
    assert settings.aws_virtual_hosting is False
    credentials = settings.credentials()
    assert credentials is not None
    assert credentials.secret_access_key.get_secret_value() == SECRET
    assert output.output_url == "s3://public-eo-data/products"


def test_without_keys_botocore_chooses_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(name, raising=False)

    settings = S3Settings()

    assert settings.credentials() is None
    assert settings.aws_virtual_hosting is None


@pytest.mark.usefixtures("aws_credentials")
async def test_credentials_never_appear_in_repr_or_logs(
    s3_endpoint: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = s3_settings(s3_endpoint)
    destination = destination_from_url("s3://some-bucket/prefix", settings)
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(destination)]
    shown.append(repr(settings.credentials()))

    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        async with S3Destination.from_settings(bucket_name(), settings) as live:
            await new_bucket(live)
            await live.put("a.tif", b"data")
            with pytest.raises(Permanent):
                async with S3Destination.from_settings("missing-bucket", settings) as other:
                    await other.put("a.tif", b"data")
    captured = capsys.readouterr()

    everything = "\n".join([*shown, caplog.text, captured.out, captured.err, repr(events)])
    assert SECRET not in everything
    assert KEY_ID not in "\n".join([*shown, repr(events)])


def test_output_urls_name_a_directory_or_a_bucket() -> None:
    assert parse_output_url("file:///data/products").path == Path("/data/products")
    assert parse_output_url("demo-output").path == Path("demo-output")
    s3 = parse_output_url("s3://public-eo-data/commonsensing/")
    assert (s3.bucket, s3.prefix) == ("public-eo-data", "commonsensing")
    assert parse_output_url("s3://").bucket is None
    with pytest.raises(ValueError, match="not supported"):
        parse_output_url("gs://bucket/prefix")
    with pytest.raises(ValueError, match="file:///absolute/path"):
        parse_output_url("file://host/data")


def test_an_s3_url_without_bucket_uses_the_jobs_bucket() -> None:
    destination = destination_from_url("s3://", S3Settings(), bucket="public-eo-data")

    assert isinstance(destination, S3Destination)
    assert destination.url_for("a/b.tif") == "s3://public-eo-data/a/b.tif"
    with pytest.raises(ValueError, match="names no bucket"):
        destination_from_url("s3://", S3Settings())


def test_output_settings_choose_naming_and_compression(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_OUTPUT_URL", "file:///srv/products")
    monkeypatch.setenv("CONVEYOR_OUTPUT_NAMING", "legacy")
    monkeypatch.setenv("CONVEYOR_COG_COMPRESSION", "ZSTD")
    monkeypatch.setenv("CONVEYOR_COG_LEVEL", "9")

    settings = WorkerSettings()

    assert settings.output_naming == "legacy"
    assert settings.cog_options() == CogOptions(compression="ZSTD", level=9)
    assert isinstance(destination_from_url(settings.output_url), LocalDestination)


def test_a_bad_output_url_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_OUTPUT_URL", "ftp://host/dir")

    with pytest.raises(ValueError, match="not supported"):
        WorkerSettings()


def test_a_deflate_level_beyond_nine_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_COG_LEVEL", "15")

    with pytest.raises(
        ValueError, match=r"CONVEYOR_COG_LEVEL=15: DEFLATE level 15 is out of range"
    ):
        WorkerSettings()


buckets = st.from_regex(r"[a-z0-9][a-z0-9-]{1,30}[a-z0-9]", fullmatch=True)
segments = st.lists(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True), max_size=4)


@given(bucket=buckets, parts=segments, trailing=st.booleans())
def test_any_s3_url_parses_to_its_bucket_and_prefix(
    bucket: str, parts: list[str], trailing: bool
) -> None:
    parts = [part for part in parts if part not in (".", "..")]
    prefix = "/".join(parts)
    location = parse_output_url(f"s3://{bucket}/{prefix}{'/' if trailing else ''}")

    assert (location.scheme, location.bucket, location.prefix) == ("s3", bucket, prefix)


@given(
    parts=st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=4)
)
def test_any_plain_or_file_path_is_a_local_directory(parts: list[str]) -> None:
    relative = "/".join(parts)

    assert parse_output_url(relative).path == Path(relative)
    assert parse_output_url(f"file:///{relative}").path == Path(f"/{relative}")
