"""The data interval a scheduler run processes, from the values Airflow puts in the task context."""

from __future__ import annotations

import pandas as pd
import pendulum
import pytest

from lstmae.intervals import interval_from_context


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


def test_data_interval_used():
    context = {
        "data_interval_start": pendulum.datetime(2026, 9, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 9, 2, tz="UTC"),
        "params": {"start": None, "end": None},
    }
    assert interval_from_context(context) == (utc("2026-09-01T00:00Z"), utc("2026-09-02T00:00Z"))


def test_params_override_data_interval():
    context = {
        "data_interval_start": pendulum.datetime(2026, 9, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 9, 2, tz="UTC"),
        "params": {"start": "2026-10-01T06:00:00Z", "end": "2026-10-03T00:00:00Z"},
    }
    assert interval_from_context(context) == (utc("2026-10-01T06:00Z"), utc("2026-10-03T00:00Z"))


def test_params_offsets_converted_to_utc():
    context = {"params": {"start": "2026-10-01T02:00:00+02:00", "end": "2026-10-01T12:00:00-05:00"}}
    start, end = interval_from_context(context)
    assert start == utc("2026-10-01T00:00Z")
    assert end == utc("2026-10-01T17:00Z")
    assert str(start.tz) == "UTC"


def test_naive_params_are_utc():
    context = {"params": {"start": "2026-10-01", "end": "2026-10-02"}}
    assert interval_from_context(context) == (utc("2026-10-01T00:00Z"), utc("2026-10-02T00:00Z"))


def test_only_one_param_rejected():
    with pytest.raises(ValueError) as error:
        interval_from_context({"params": {"start": "2026-10-01", "end": None}})
    assert "Set both params 'start' and 'end', or neither" in str(error.value)
    assert "start='2026-10-01'" in str(error.value)


def test_no_data_interval_explains_fix():
    # A manual run without a logical date has no data interval in Airflow 3.
    with pytest.raises(ValueError) as error:
        interval_from_context({"params": {}})
    message = str(error.value)
    assert "This run has no data interval" in message
    assert "Trigger -> Backfill" in message
    assert "params 'start' and 'end'" in message


def test_zero_length_interval_rejected():
    moment = pendulum.datetime(2026, 9, 1, tz="UTC")
    with pytest.raises(ValueError) as error:
        interval_from_context({"data_interval_start": moment, "data_interval_end": moment})
    assert "2026-09-01T00:00:00+00:00 .. 2026-09-01T00:00:00+00:00 is empty" in str(error.value)
    assert "CronDataIntervalTimetable" in str(error.value)


def test_end_before_start_rejected():
    with pytest.raises(ValueError, match="is empty"):
        interval_from_context({"params": {"start": "2026-10-02", "end": "2026-10-01"}})


def test_invalid_param_names_value():
    with pytest.raises(ValueError) as error:
        interval_from_context({"params": {"start": "yesterday-ish", "end": "2026-10-01"}})
    assert "Invalid param 'start' 'yesterday-ish'" in str(error.value)
    assert "ISO 8601" in str(error.value)
