"""The monthly spend forecast and its backtest (eval.forecast) on daily series of known shape."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from eval.forecast import (
    MEAN_DAYS,
    MIN_WINDOWS,
    TREND_DAYS,
    backtest,
    daily_series,
    forecast_month,
    mean_last,
)

AS_OF = dt.datetime(2026, 3, 16, 9, 30, tzinfo=dt.UTC).timestamp()  # 15 days of March done


def series(values, last: dt.date = dt.date(2026, 3, 15)) -> dict[str, float]:
    """``values`` as spend per day ending on ``last``."""
    first = last - dt.timedelta(days=len(values) - 1)
    return {(first + dt.timedelta(days=i)).isoformat(): float(v) for i, v in enumerate(values)}


def test_constant_spend_forecasts_exactly_with_zero_backtest_error():
    f = forecast_month("acme", series([2.5] * 60), AS_OF)
    assert (f.period, f.days_elapsed, f.days_left, f.history_days) == ("2026-03", 15, 16, 60)
    assert f.spent_to_date_usd == pytest.approx(15 * 2.5)
    assert f.total_usd == pytest.approx(31 * 2.5)
    assert f.backtest.mae_usd == pytest.approx(0, abs=1e-9)
    assert f.backtest.mape == pytest.approx(0, abs=1e-9)
    assert f.method.startswith("mean")  # a tie goes to the simpler model
    # Every 16-day window with 14 days before it, inside 60 days.
    assert f.backtest.windows == 60 - TREND_DAYS - 16 + 1


def test_a_steady_rise_is_forecast_by_the_trend_which_backtests_better():
    values = 1.0 + 0.1 * np.arange(60)
    f = forecast_month("growing", series(values), AS_OF)
    assert f.method.startswith("linear trend")
    ahead = 1.0 + 0.1 * np.arange(60, 76)  # the line continued over March 16..31
    assert f.total_usd == pytest.approx(values[-15:].sum() + ahead.sum())
    assert f.backtest.mae_usd == pytest.approx(0, abs=1e-6)
    mean_error = backtest(values, 16, mean_last(MEAN_DAYS))
    assert mean_error.mae_usd > 1.0  # the mean lags a rise


def _by_hand(values: np.ndarray, cut: int, horizon: int, method: str) -> float:
    if method == "mean":
        return values[cut - MEAN_DAYS:cut].mean() * horizon
    y = values[cut - TREND_DAYS:cut]
    slope, intercept = np.polyfit(np.arange(TREND_DAYS), y, 1)
    return sum(max(0.0, intercept + slope * (TREND_DAYS + h)) for h in range(horizon))


def test_noisy_spend_reports_the_error_its_backtest_measured():
    values = np.random.default_rng(3).uniform(0, 10, 60)
    f = forecast_month("noisy", series(values), AS_OF)
    # Each model's error recomputed here window by window; the better one forecasts, and
    # the error stated is its own.
    mae = {m: np.mean([abs(_by_hand(values, c, 16, m) - values[c:c + 16].sum())
                       for c in range(TREND_DAYS, 60 - 16 + 1)]) for m in ("mean", "trend")}
    best = min(mae, key=mae.get)
    assert f.method.startswith({"mean": "mean", "trend": "linear"}[best])
    assert f.backtest.mae_usd == pytest.approx(mae[best]) and f.backtest.mae_usd > 0.5
    assert f.total_usd == pytest.approx(values[-15:].sum() + _by_hand(values, 60, 16, best))


def test_too_little_history_says_so_instead_of_forecasting():
    f = forecast_month("new", series([3.0] * 20), AS_OF)
    assert f.total_usd is None and f.backtest is None and f.method is None
    need = TREND_DAYS + 16 + MIN_WINDOWS - 1
    assert "too little history" in f.note and f"needs {need}" in f.note
    assert f.spent_to_date_usd == pytest.approx(15 * 3.0)  # still told what was spent
    assert forecast_month("enough", series([3.0] * need), AS_OF).total_usd is not None


def test_days_without_rows_count_as_zero_and_today_is_not_history():
    got = daily_series({"2026-03-10": 1.0, "2026-03-13": 2.0, "2026-03-16": 9.0},
                       dt.date(2026, 3, 16))
    assert got.tolist() == [1.0, 0.0, 0.0, 2.0, 0.0, 0.0]


def test_the_first_of_the_month_forecasts_the_whole_month():
    start = dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()
    f = forecast_month("acme", series([1.0] * 50, dt.date(2026, 1, 31)), start)
    assert (f.period, f.days_elapsed, f.days_left, f.spent_to_date_usd) == ("2026-02", 0, 28, 0)
    assert f.total_usd == pytest.approx(28.0)


def test_budget_share():
    f = forecast_month("acme", series([1.0] * 60), AS_OF, budget_usd=62.0)
    assert f.budget_share == pytest.approx(0.5)
