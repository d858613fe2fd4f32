"""The pure rules of webhooks (``zhifu.webhooks.model``) and the outbox's backoff
(``zhifu.ops.outbox``): URLs, event-type patterns, event bodies, response
excerpts, retry delays; each limit at its value and one past it."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from zhifu.ops.outbox import (
    ATTEMPTS_MAX,
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    JITTER_FRACTION,
    nominal_schedule_s,
    retry_delay_s,
)
from zhifu.webhooks.errors import InvalidEventError, InvalidSubscriptionError
from zhifu.webhooks.model import (
    EVENT_BODY_BYTES_MAX,
    EVENT_DATA_DEPTH_MAX,
    EVENT_TYPE_CHARS_MAX,
    EVENT_TYPES_PER_SUBSCRIPTION_MAX,
    RESPONSE_EXCERPT_CHARS_MAX,
    TEST_EVENT_TYPE,
    URL_CHARS_MAX,
    check_event_type,
    check_event_types,
    check_url,
    event_body,
    excerpt,
    is_success,
    subscribed,
)

EVENT_ID = uuid.UUID("0192f0c1-0000-7000-8000-000000000001")


# --- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://merchant.example.com/zhifu/webhooks",
        "https://merchant.example.com:8443/hooks?shop=12&v=2",
        "https://xn--fiqs8s.example/hooks",
        "https://8.8.8.8/hooks",
        "https://[2001:4860:4860::8888]/hooks",
        "https://a.b",
    ],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert check_url(url, allow_loopback=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://LOCALHOST:9000/",
        "https://127.0.0.2/hooks",
        "http://[::1]:8000/hooks",
    ],
)
def test_loopback_is_for_development_only(url: str) -> None:
    assert check_url(url, allow_loopback=True) == url
    with pytest.raises(InvalidSubscriptionError, match="ZHIFU_WEBHOOKS_ALLOW_LOOPBACK"):
        check_url(url, allow_loopback=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://merchant.example.com/hooks", "must start with https://"),
        ("ftp://merchant.example.com/hooks", "must start with https://"),
        ("HTTPS://merchant.example.com/hooks", "must start with https://"),
        ("merchant.example.com/hooks", "must start with https://"),
        ("https://user:pw@merchant.example.com/", "user name or password"),
        ("https://merchant.example.com/hooks#frag", "fragment"),
        ("https://merchant.example.com/hooks#", "fragment"),
        ("https://merchant.example.com/a b", "printable ASCII"),
        ("https://商户.example/hooks", "printable ASCII"),
        ("https://merchant.example.com:99999/", "not a valid URL"),
        ("https://merchant.example.com:0/", "port 0"),
        ("https:///hooks", "no host"),
        ("https://intranet/hooks", "public DNS name"),
        ("https://-bad.example.com/", "public DNS name"),
        ("https://under_score.example.com/", "public DNS name"),
        ("https://2130706433/", "public DNS name"),
        ("https://127.1/", "ends in a number"),
        ("https://0x7f.1/", "ends in a number"),
        ("https://10.1.2.3/hooks", "not a public address"),
        ("https://192.168.1.10/hooks", "not a public address"),
        ("https://172.16.0.1/hooks", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://100.64.0.1/", "not a public address"),
        ("https://0.0.0.0/", "not a public address"),
        ("https://224.0.0.1/", "not a public address"),
        ("https://[fd00::1]/", "not a public address"),
        ("https://[fe80::1]/", "not a public address"),
        ("https://[::ffff:10.0.0.1]/", "not a public address"),
        ("", "required"),
    ],
)
def test_bad_urls_are_refused_with_the_rule(url: str, message: str) -> None:
    with pytest.raises(InvalidSubscriptionError, match=message):
        check_url(url, allow_loopback=True)


def test_ipv4_mapped_loopback_counts_as_loopback() -> None:
    with pytest.raises(InvalidSubscriptionError, match="loopback"):
        check_url("https://[::ffff:127.0.0.1]/", allow_loopback=False)


def test_a_url_at_the_length_limit_and_one_past() -> None:
    base = "https://merchant.example.com/"
    at_limit = base + "a" * (URL_CHARS_MAX - len(base))
    assert len(at_limit) == URL_CHARS_MAX
    assert check_url(at_limit, allow_loopback=False) == at_limit
    with pytest.raises(InvalidSubscriptionError, match=f"longer than {URL_CHARS_MAX}"):
        check_url(at_limit + "a", allow_loopback=False)


def test_a_url_must_be_text() -> None:
    with pytest.raises(InvalidSubscriptionError):
        check_url(None, allow_loopback=True)


# --- event types --------------------------------------------------------------------------


def test_event_type_patterns_are_deduplicated_and_sorted() -> None:
    assert check_event_types(["refund.succeeded", "payment.*", "refund.succeeded"]) == (
        "payment.*",
        "refund.succeeded",
    )
    assert check_event_types(["*"]) == ("*",)


@pytest.mark.parametrize(
    "pattern",
    [
        "payment",
        "Payment.succeeded",
        "payment.",
        "payment..x",
        "*.succeeded",
        "pay*",
        "",
        " a.b",
        7,
    ],
)
def test_bad_event_type_patterns_are_refused(pattern: object) -> None:
    with pytest.raises(InvalidSubscriptionError, match="event type"):
        check_event_types([pattern])


@pytest.mark.parametrize("patterns", [[], "payment.*", None])
def test_event_types_must_be_a_non_empty_list(patterns: object) -> None:
    with pytest.raises(InvalidSubscriptionError, match="list of 1 or more"):
        check_event_types(patterns)


def test_event_type_limits() -> None:
    many = [f"payment.kind_{n}" for n in range(EVENT_TYPES_PER_SUBSCRIPTION_MAX)]
    assert len(check_event_types(many)) == EVENT_TYPES_PER_SUBSCRIPTION_MAX
    with pytest.raises(
        InvalidSubscriptionError, match=f"at most {EVENT_TYPES_PER_SUBSCRIPTION_MAX}"
    ):
        check_event_types([*many, "payment.one_more"])
    long_name = "a." + "b" * (EVENT_TYPE_CHARS_MAX - 2)
    assert check_event_types([long_name]) == (long_name,)
    assert check_event_type(long_name) == long_name
    with pytest.raises(InvalidSubscriptionError):
        check_event_types([long_name + "b"])
    with pytest.raises(InvalidEventError):
        check_event_type(long_name + "b")


def test_published_event_types_are_exact_names_and_not_the_test_type() -> None:
    assert check_event_type("payment.succeeded") == "payment.succeeded"
    for bad in ("payment.*", "*", "payment", TEST_EVENT_TYPE):
        with pytest.raises(InvalidEventError):
            check_event_type(bad)


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["*"], "payment.succeeded", True),
        (["payment.succeeded"], "payment.succeeded", True),
        (["payment.failed"], "payment.succeeded", False),
        (["payment.*"], "payment.succeeded", True),
        (["payment.*"], "payment.refund.succeeded", True),
        (["payment.*"], "payments.succeeded", False),
        (["pay.*"], "payment.succeeded", False),
        (["refund.*", "payment.succeeded"], "payment.succeeded", True),
    ],
)
def test_which_subscriptions_receive_an_event(
    patterns: list[str], event_type: str, expected: bool
) -> None:
    assert subscribed(patterns, event_type) is expected


# --- bodies, answers, backoff -------------------------------------------------------------


def test_an_event_body_is_canonical_json() -> None:
    body = event_body(EVENT_ID, "payment.succeeded", 1_767_225_600_000_000, {"b": 1, "a": "元"})
    assert body == (
        '{"created_ts":1767225600000000,"data":{"a":"元","b":1},'
        '"id":"0192f0c1-0000-7000-8000-000000000001","type":"payment.succeeded"}'
    )
    assert json.loads(body)["data"] == {"a": "元", "b": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"amount": 1.5}, "floats"),
        ({"nested": [{"x": 0.1}]}, "floats"),
        ({"when": object()}, "not object"),
        ({1: "x"}, "keys must be strings"),
        ([1, 2], "JSON object"),
    ],
)
def test_event_data_is_checked(data: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        event_body(EVENT_ID, "payment.succeeded", 0, data)


def test_event_data_depth_and_size_limits() -> None:
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(EVENT_DATA_DEPTH_MAX - 1):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    event_body(EVENT_ID, "a.b", 0, deep)
    inner["x"] = {}
    with pytest.raises(InvalidEventError, match="nested deeper"):
        event_body(EVENT_ID, "a.b", 0, deep)
    overhead = len(event_body(EVENT_ID, "a.b", 0, {"p": ""}).encode())
    at_limit = {"p": "x" * (EVENT_BODY_BYTES_MAX - overhead)}
    assert len(event_body(EVENT_ID, "a.b", 0, at_limit).encode()) == EVENT_BODY_BYTES_MAX
    with pytest.raises(InvalidEventError, match=f"at most {EVENT_BODY_BYTES_MAX}"):
        event_body(EVENT_ID, "a.b", 0, {"p": at_limit["p"] + "x"})


def test_only_2xx_is_success() -> None:
    assert [code for code in (199, 200, 204, 299, 300, 302, 400, 500) if is_success(code)] == [
        200,
        204,
        299,
    ]


def test_a_response_excerpt_is_short_printable_text() -> None:
    assert excerpt(b"ok") == "ok"
    assert excerpt(b"line\r\nnext\x00\xff") == "line  next \ufffd"
    assert len(excerpt(b"y" * 5000)) == RESPONSE_EXCERPT_CHARS_MAX


def test_the_retry_schedule_spans_about_a_day_in_twelve_attempts() -> None:
    schedule = nominal_schedule_s()
    assert len(schedule) == ATTEMPTS_MAX - 1
    assert schedule[0] == BACKOFF_BASE_S
    assert schedule == sorted(schedule)
    assert max(schedule) == BACKOFF_CAP_S
    assert 22 * 3600 <= sum(schedule) <= 26 * 3600


def test_retry_delays_are_jittered_within_the_bounds() -> None:
    rng = random.Random(7)
    for failed in range(1, ATTEMPTS_MAX + 3):
        nominal = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failed - 1))
        delays = {retry_delay_s(failed, rng) for _ in range(50)}
        assert len(delays) > 1, "no jitter"
        for delay in delays:
            assert nominal * (1 - JITTER_FRACTION) <= delay <= nominal * (1 + JITTER_FRACTION)
