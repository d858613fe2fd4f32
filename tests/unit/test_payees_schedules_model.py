"""The pure rules of payees and schedules: names, masks, when runs fall
(month ends, a Shanghai clock without daylight saving), the limits of a
schedule's timing, and what a run's outcome does to the schedule."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from zhifu.payments.errors import InvalidPayeeError, InvalidScheduleError
from zhifu.payments.model import (
    PAYEE_NAME_CHARS_MAX,
    PAYEE_NAME_INPUT_CHARS_MAX,
    SCHEDULE_COUNT_MAX,
    SCHEDULE_FAILURES_MAX,
    SCHEDULE_FIRST_RUN_DAYS_MAX,
    SCHEDULE_LEAD_S_MIN,
    SCHEDULE_RUN_LATE_S_MAX,
    SCHEDULE_SPAN_DAYS_MAX,
    SHANGHAI_TZ,
    Frequency,
    PayeeScheme,
    Recurrence,
    RunOutcome,
    ScheduleStatus,
    after_run,
    check_recurrence,
    is_too_late,
    mask_payee_name,
    normalise_payee_name,
    payee_index_text,
    shanghai_time,
    timestamp_us,
    to_shanghai,
)

US = 1_000_000
# 2027-01-01T00:00:00+08:00
NOW_US = timestamp_us(datetime(2027, 1, 1, tzinfo=SHANGHAI_TZ))


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI_TZ)


def recurrence(
    frequency: Frequency, first: datetime, *, end_date: date | None = None, count: int | None = None
) -> Recurrence:
    return check_recurrence(
        frequency, first.replace(tzinfo=None), NOW_US, end_date=end_date, count=count
    )


def runs(rule: Recurrence, n: int) -> list[datetime | None]:
    return [rule.local_run(seq) for seq in range(1, n + 1)]


# --- payee names and masks -------------------------------------------------------------------


def test_a_payee_name_is_normalised() -> None:
    assert normalise_payee_name("  Zhang    Wei ") == "Zhang Wei"
    assert normalise_payee_name("王小明") == "王小明"
    assert normalise_payee_name("e\u0301") == "\u00e9"  # NFC


def test_payee_name_length_at_the_limit_and_one_past() -> None:
    assert normalise_payee_name("名" * PAYEE_NAME_CHARS_MAX) == "名" * PAYEE_NAME_CHARS_MAX
    with pytest.raises(InvalidPayeeError, match=f"1 to {PAYEE_NAME_CHARS_MAX}") as caught:
        normalise_payee_name("名" * (PAYEE_NAME_CHARS_MAX + 1))
    assert caught.value.field == "name"
    with pytest.raises(InvalidPayeeError):
        normalise_payee_name("   ")
    normalise_payee_name(" " * (PAYEE_NAME_INPUT_CHARS_MAX - 1) + "A")
    with pytest.raises(InvalidPayeeError):
        normalise_payee_name(" " * PAYEE_NAME_INPUT_CHARS_MAX + "A")


@pytest.mark.parametrize("bad", ["王\u202e明", "Zhang\nWei", "A\x00B", "a\u200db"])
def test_control_and_invisible_characters_are_refused_in_names(bad: str) -> None:
    with pytest.raises(InvalidPayeeError, match="control or invisible"):
        normalise_payee_name(bad)


@pytest.mark.parametrize(
    ("name", "masked"),
    [("王小明", "王*明"), ("小明", "*明"), ("明", "明"), ("Zhang Wei", "Z*******i"), ("", "")],
)
def test_masked_names_hide_all_but_the_ends(name: str, masked: str) -> None:
    assert mask_payee_name(name) == masked


def test_the_blind_index_text_is_per_customer() -> None:
    one, two = uuid.uuid4(), uuid.uuid4()
    number = "1024000100000000123"
    first = payee_index_text(one, PayeeScheme.INTRA_BANK, "1024", number)
    assert first != payee_index_text(two, PayeeScheme.INTRA_BANK, "1024", number)
    assert number in first


# --- Shanghai time ---------------------------------------------------------------------------


def test_a_naive_time_is_shanghai_time_and_an_aware_one_is_converted() -> None:
    assert to_shanghai(datetime(2027, 3, 1, 9, 0)) == local(2027, 3, 1, 9, 0)
    assert to_shanghai(datetime(2027, 3, 1, 1, 0, tzinfo=UTC)) == local(2027, 3, 1, 9, 0)
    nine_in_shanghai = datetime(2027, 1, 1, 1, tzinfo=UTC)
    assert timestamp_us(local(2027, 1, 1, 9, 0)) == timestamp_us(nine_in_shanghai)
    assert shanghai_time(timestamp_us(local(2027, 1, 1, 9, 0))) == local(2027, 1, 1, 9, 0)


@pytest.mark.parametrize(
    "first",
    [
        local(2027, 3, 10, 9, 0),  # across the US daylight saving change (14 March)
        local(2027, 3, 25, 2, 30),  # across Europe's (28 March), at a time that skips there
        local(2027, 10, 28, 1, 30),  # across Europe's return (31 October)
    ],
)
def test_daily_runs_are_exactly_a_day_apart_in_shanghai(first: datetime) -> None:
    rule = recurrence(Frequency.DAILY, first, count=10)
    stamps = [ts for ts in (rule.run_ts(seq) for seq in range(1, 11)) if ts is not None]
    assert len(stamps) == 10
    assert {b - a for a, b in itertools.pairwise(stamps)} == {86_400 * US}
    times = {(t.hour, t.minute) for t in runs(rule, 10) if t is not None}
    assert times == {(first.hour, first.minute)}


def test_weekly_runs_keep_the_weekday_and_time() -> None:
    rule = recurrence(Frequency.WEEKLY, local(2027, 1, 4, 8, 15), count=5)
    days = [run.date() for run in runs(rule, 5)]  # type: ignore[union-attr]
    assert days == [date(2027, 1, 4) + timedelta(weeks=n) for n in range(5)]
    assert rule.local_run(6) is None


# --- month ends ------------------------------------------------------------------------------


def test_monthly_on_the_31st_falls_on_each_months_last_day_and_does_not_drift() -> None:
    rule = recurrence(Frequency.MONTHLY, local(2027, 1, 31, 9, 0), count=14)
    days = [run.date() for run in runs(rule, 14)]  # type: ignore[union-attr]
    assert days == [
        date(2027, 1, 31),
        date(2027, 2, 28),
        date(2027, 3, 31),
        date(2027, 4, 30),
        date(2027, 5, 31),
        date(2027, 6, 30),
        date(2027, 7, 31),
        date(2027, 8, 31),
        date(2027, 9, 30),
        date(2027, 10, 31),
        date(2027, 11, 30),
        date(2027, 12, 31),
        date(2028, 1, 31),
        date(2028, 2, 29),  # a leap year
    ]
    assert {(r.hour, r.minute) for r in runs(rule, 14)} == {(9, 0)}  # type: ignore[union-attr]


@pytest.mark.parametrize(("day", "february"), [(29, 28), (30, 28), (28, 28), (15, 15)])
def test_monthly_on_days_29_to_31_in_february(day: int, february: int) -> None:
    rule = recurrence(Frequency.MONTHLY, local(2027, 1, day, 9, 0), count=3)
    assert [r.day for r in runs(rule, 3)] == [day, february, day]  # type: ignore[union-attr]


def test_monthly_across_the_year_end() -> None:
    rule = recurrence(Frequency.MONTHLY, local(2027, 11, 30, 23, 59), count=4)
    assert [r.date() for r in runs(rule, 4)] == [  # type: ignore[union-attr]
        date(2027, 11, 30),
        date(2027, 12, 30),
        date(2028, 1, 30),
        date(2028, 2, 29),
    ]


# --- ends: once, count, end date, the span ---------------------------------------------------


def test_a_one_off_transfer_runs_once() -> None:
    rule = recurrence(Frequency.ONCE, local(2027, 2, 1, 9, 0))
    assert rule.local_run(1) == local(2027, 2, 1, 9, 0)
    assert rule.local_run(2) is None
    assert rule.local_run(0) is None


@pytest.mark.parametrize("field", ["count", "end_date"])
def test_a_one_off_transfer_takes_no_end(field: str) -> None:
    ends = {"count": {"count": 2}, "end_date": {"end_date": date(2027, 3, 1)}}[field]
    with pytest.raises(InvalidScheduleError, match="runs once") as caught:
        recurrence(Frequency.ONCE, local(2027, 2, 1, 9, 0), **ends)  # type: ignore[arg-type]
    assert caught.value.field == "frequency"


def test_count_at_the_limit_and_one_past() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), count=SCHEDULE_COUNT_MAX)
    assert rule.local_run(SCHEDULE_COUNT_MAX) is not None
    assert rule.local_run(SCHEDULE_COUNT_MAX + 1) is None
    for bad in (0, SCHEDULE_COUNT_MAX + 1):
        with pytest.raises(InvalidScheduleError, match=f"1 to {SCHEDULE_COUNT_MAX}"):
            recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), count=bad)


def test_the_end_date_is_the_last_day_a_run_may_fall_on() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 23, 59), end_date=date(2027, 2, 3))
    assert [r.day for r in runs(rule, 4) if r is not None] == [1, 2, 3]
    same_day = recurrence(Frequency.WEEKLY, local(2027, 2, 1, 9, 0), end_date=date(2027, 2, 1))
    assert same_day.local_run(2) is None
    with pytest.raises(InvalidScheduleError) as caught:
        recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), end_date=date(2027, 1, 31))
    assert caught.value.field == "end_date"


def test_end_date_span_at_the_limit_and_one_past() -> None:
    first = local(2027, 2, 1, 9, 0)
    last = first.date() + timedelta(days=SCHEDULE_SPAN_DAYS_MAX)
    rule = recurrence(Frequency.DAILY, first, end_date=last)
    assert rule.local_run(SCHEDULE_SPAN_DAYS_MAX + 1) == first + timedelta(
        days=SCHEDULE_SPAN_DAYS_MAX
    )
    with pytest.raises(InvalidScheduleError, match=str(SCHEDULE_SPAN_DAYS_MAX)):
        recurrence(Frequency.DAILY, first, end_date=last + timedelta(days=1))


def test_an_open_ended_schedule_ends_after_the_span() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0))
    assert rule.local_run(SCHEDULE_SPAN_DAYS_MAX + 1) is not None
    assert rule.local_run(SCHEDULE_SPAN_DAYS_MAX + 2) is None


# --- the first run ---------------------------------------------------------------------------


def test_first_run_lead_at_the_limit_and_one_past() -> None:
    at_limit = shanghai_time(NOW_US + SCHEDULE_LEAD_S_MIN * US)
    assert recurrence(Frequency.ONCE, at_limit).run_ts(1) == NOW_US + SCHEDULE_LEAD_S_MIN * US
    with pytest.raises(InvalidScheduleError, match="at least") as caught:
        recurrence(Frequency.ONCE, at_limit - timedelta(minutes=1))
    assert caught.value.field == "first_run"


def test_first_run_horizon_at_the_limit_and_one_past() -> None:
    at_limit = shanghai_time(NOW_US + SCHEDULE_FIRST_RUN_DAYS_MAX * 86_400 * US)
    recurrence(Frequency.ONCE, at_limit)
    with pytest.raises(InvalidScheduleError, match=f"{SCHEDULE_FIRST_RUN_DAYS_MAX} days"):
        recurrence(Frequency.ONCE, at_limit + timedelta(minutes=1))


@pytest.mark.parametrize("extra", [timedelta(seconds=1), timedelta(microseconds=1)])
def test_the_first_run_is_a_whole_minute(extra: timedelta) -> None:
    with pytest.raises(InvalidScheduleError, match="whole minute"):
        recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0) + extra)


def test_first_after_finds_the_next_run_not_yet_due() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), count=10)
    now = timestamp_us(local(2027, 2, 4, 12, 0))
    assert rule.first_after(1, now) == (5, timestamp_us(local(2027, 2, 5, 9, 0)))
    assert rule.first_after(7, now) == (8, timestamp_us(local(2027, 2, 8, 9, 0)))
    assert rule.first_after(1, timestamp_us(local(2027, 2, 11, 0, 0))) is None


# --- what a run does to its schedule ---------------------------------------------------------


def test_a_paid_run_moves_on_and_clears_failures() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), count=3)
    following = after_run(rule, 1, RunOutcome.PAID, 2)
    assert following.status is ScheduleStatus.ACTIVE
    assert (following.seq, following.ts, following.failures) == (2, rule.run_ts(2), 0)


def test_failures_in_a_row_pause_at_the_limit() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), count=10)
    below = after_run(rule, 1, RunOutcome.FAILED, SCHEDULE_FAILURES_MAX - 2)
    assert below.status is ScheduleStatus.ACTIVE
    assert below.failures == SCHEDULE_FAILURES_MAX - 1
    at_limit = after_run(rule, 2, RunOutcome.FAILED, SCHEDULE_FAILURES_MAX - 1)
    assert at_limit.status is ScheduleStatus.PAUSED
    assert (at_limit.seq, at_limit.ts, at_limit.failures) == (3, None, SCHEDULE_FAILURES_MAX)


def test_a_skipped_run_leaves_the_failures_and_the_last_run_finishes() -> None:
    rule = recurrence(Frequency.DAILY, local(2027, 2, 1, 9, 0), count=2)
    skipped = after_run(rule, 1, RunOutcome.SKIPPED, 1)
    assert (skipped.status, skipped.failures) == (ScheduleStatus.ACTIVE, 1)
    for outcome in RunOutcome:
        last = after_run(rule, 2, outcome, 0)
        assert (last.status, last.ts) == (ScheduleStatus.FINISHED, None)


def test_lateness_at_the_limit_and_one_past() -> None:
    due = NOW_US
    assert not is_too_late(due, due + SCHEDULE_RUN_LATE_S_MAX * US)
    assert is_too_late(due, due + SCHEDULE_RUN_LATE_S_MAX * US + 1)
