"""No secret reaches a log line: ours (structlog) or the libraries' (standard logging), nested,
in URLs and query strings, in request headers, in tracebacks, or a known secret anywhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import structlog
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logging import REDACTED, Scrubber, configure_logging, secrets_from_environment

SECRET = "s3cr3t-Hunter2-value"
AWS_SECRET = "aws-secret-key-0123456789"
SESSION_TOKEN = "session-token-abcdefghijklmnop"


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys
    # Leave logging as the other tests expect it.
    configure_logging("json", "INFO", environment={})


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    captured = capsys.readouterr()
    return [json.loads(line) for line in (captured.out + captured.err).splitlines() if line]


def test_our_loggers_scrub_nested_secrets_urls_and_query_strings(
    logs: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "DEBUG", environment={})
    log = structlog.get_logger("conveyor.test")
    log.info(
        "connecting",
        settings={"redis": {"url": f"redis://conveyor-worker:{SECRET}@redis:6379/0"}},
        attempts=[{"password": SECRET}, ("token", {"api_key": SECRET})],
        presigned=f"https://b.s3.amazonaws.com/k?X-Amz-Signature={SECRET}&X-Amz-Expires=60",
        form=f"user=me&password={SECRET}",
        headers=f"{{'Authorization': 'AWS4-HMAC-SHA256 Credential=AKIA, Signature={SECRET}'}}",
        count=3,
    )
    (line,) = lines(logs)
    text = json.dumps(line)
    assert SECRET not in text
    assert line["count"] == 3
    assert line["attempts"][0] == {"password": REDACTED}  # type: ignore[index]
    assert "redis://conveyor-worker:***@redis:6379/0" in text
    assert "X-Amz-Expires=60" in text and "user=me" in text


def test_library_loggers_go_through_the_same_scrubbing(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO", environment={"CONVEYOR_REDIS_PASSWORD": SECRET})
    logging.getLogger("redis.connection").warning(
        "cannot connect to %s", f"redis://u:{SECRET}@h:6379/0"
    )
    logging.getLogger("botocore.endpoint").error(
        "Sending http request: %s",
        {"headers": {"Authorization": f"AWS4-HMAC-SHA256 Signature={SECRET}"}},
    )
    try:
        raise RuntimeError(f"login failed for password {SECRET}")
    except RuntimeError:
        logging.getLogger("datacube.index").exception("index unreachable")
    records = lines(logs)
    assert len(records) == 3
    assert all(SECRET not in json.dumps(record) for record in records)
    assert {record["logger"] for record in records} == {
        "redis.connection",
        "botocore.endpoint",
        "datacube.index",
    }
    assert "RuntimeError" in str(records[2]["exception"])  # the traceback is kept, scrubbed


def test_a_known_secret_is_removed_wherever_it_appears(
    logs: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(f"{SECRET}\n")
    environment = {
        "CONVEYOR_REDIS_PASSWORD_FILE": str(password_file),
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    assert set(secrets_from_environment(environment)) == {SECRET, AWS_SECRET}
    configure_logging("json", "INFO", environment=environment)
    structlog.get_logger().info(f"odd message {SECRET}{AWS_SECRET}", note=f"x{AWS_SECRET}x")
    logging.getLogger("aiobotocore").warning("signing with %s", AWS_SECRET)
    text = json.dumps(lines(logs))
    assert SECRET not in text and AWS_SECRET not in text


def test_botocore_debug_logs_of_a_real_request_carry_no_secret(
    logs: pytest.CaptureFixture[str], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real PUT to moto's S3 server with botocore's own DEBUG logging on."""
    environment = {
        "AWS_ACCESS_KEY_ID": "testing-key",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    configure_logging("json", "INFO", environment=environment)
    # botocore's loggers at DEBUG, whatever levels other code gave them before.
    names = ("botocore", "botocore.endpoint", "botocore.auth", "botocore.hooks")
    botocore_loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in botocore_loggers]
    for logger in botocore_loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    try:
        # A session of its own: boto3's default session may hold credentials from earlier.
        session = boto3.session.Session(
            aws_access_key_id="testing-key",
            aws_secret_access_key=AWS_SECRET,
            aws_session_token=SESSION_TOKEN,
        )
        client = session.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )
        client.create_bucket(Bucket="logging-test")
        client.put_object(Bucket="logging-test", Key="k", Body=b"x")
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": "logging-test", "Key": "k"}
        )
        logging.getLogger("botocore.test").debug("presigned %s", url)
    finally:
        for logger, level in zip(botocore_loggers, levels, strict=True):
            logger.setLevel(level)
    records = lines(logs)
    text = json.dumps(records)
    assert len(records) > 10, "botocore logged nothing: the path was not exercised"
    sending = [str(r["event"]) for r in records if "Sending http request" in str(r["event"])]
    assert sending, sorted({str(r.get("logger")) for r in records})
    assert "Authorization" in sending[0] and "X-Amz-Security-Token" in sending[0], sending[0]
    assert AWS_SECRET not in text and SESSION_TOKEN not in text
    assert "Signature=" not in text.replace(f"Signature={REDACTED}", "")


SECRET_TEXT = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="'\"&,;}]) "),
    min_size=8,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(
    secret=SECRET_TEXT,
    name=st.sampled_from(["password", "token", "secret", "api_key", "X-Amz-Signature"]),
    shape=st.sampled_from(["query", "pair", "quoted", "url", "nested"]),
)
def test_secret_shapes_never_survive_scrubbing(secret: str, name: str, shape: str) -> None:
    scrubber = Scrubber()
    if shape == "query":
        value: object = f"https://h/p?a=1&{name}={secret}&b=2"
    elif shape == "pair":
        value = f"{name}: {secret}"
    elif shape == "quoted":
        value = f"{{'{name}': '{secret}', 'other': 1}}"
    elif shape == "url":
        value = f"postgresql://user:{secret.replace('@', '').replace('/', '')}@db:5432/x"
        secret = secret.replace("@", "").replace("/", "")
    else:
        value = {"outer": [{"inner": {name: secret}}]}
    scrubbed = scrubber.value(value)
    assert secret not in json.dumps(scrubbed), scrubbed


async def test_a_service_given_its_password_in_the_url_never_logs_it(tmp_path: Path) -> None:
    """A real dispatcher process at DEBUG, with the password in CONVEYOR_REDIS_URL."""
    from shared.acl import username
    from shared.embedded import EmbeddedValkey
    from tests.processes import ServiceProcess, service_env, wait_ready

    password = "Dispatcher-Pa55word-xyz"
    server = EmbeddedValkey(tmp_path / "valkey", acl_passwords={"dispatcher": password})
    server.start()
    url = f"redis://{username('dispatcher')}:{password}@{server.host}:{server.port}/0"
    env = service_env(url, "conveyor", CONVEYOR_LOG_LEVEL="DEBUG", CONVEYOR_BLOCK_MS="100")
    dispatcher = ServiceProcess("services.dispatcher", env, [], tmp_path / "d.log")
    try:
        await wait_ready(dispatcher)
        assert dispatcher.terminate() == 0
        output = dispatcher.output
        assert "dispatcher started" in output
        assert password not in output
    finally:
        dispatcher.close()
        server.stop()
