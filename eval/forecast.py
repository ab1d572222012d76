"""A tenant's spend for the current month: forecast, with its error measured on its own past.

Two simple daily-spend models, no more: the mean of the last ``MEAN_DAYS`` complete days, and a
least-squares line through the last ``TREND_DAYS`` (clipped at zero). Each is backtested on the
tenant's history: for every day ``c`` with enough days before it and the horizon's days after
it, the model sees days ``< c`` and forecasts the spend of days ``c .. c + horizon - 1``, where
the horizon is the number of days left in the current month (today included). The model with
the smaller mean absolute error forecasts; its error (USD, and as a share of the actual spend)
is what the report states beside the forecast, so a reader can judge it.

Only complete days are read: the forecast period total is what was spent on the month's
complete days so far plus the forecast of the rest (today onward). With fewer than
``MIN_WINDOWS`` backtest windows the tenant has too little history, and no forecast is made.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

MEAN_DAYS = 7
TREND_DAYS = 14
MIN_WINDOWS = 3

Model = Callable[[np.ndarray, int], float]


def mean_last(days: int) -> Model:
    """The mean daily spend of the last ``days`` days, for each day of the horizon."""
    def forecast(history: np.ndarray, horizon: int) -> float:
        return float(history[-days:].mean()) * horizon
    return forecast


def trend_last(days: int) -> Model:
    """A straight line through the last ``days`` days, extended over the horizon (a day's
    spend is never below zero)."""
    def forecast(history: np.ndarray, horizon: int) -> float:
        y = history[-days:]
        x = np.arange(len(y), dtype=float)
        slope, intercept = np.polyfit(x, y, 1)
        ahead = intercept + slope * np.arange(len(y), len(y) + horizon)
        return float(np.clip(ahead, 0.0, None).sum())
    return forecast


MODELS: dict[str, Model] = {
    f"mean of the last {MEAN_DAYS} days": mean_last(MEAN_DAYS),
    f"linear trend over the last {TREND_DAYS} days": trend_last(TREND_DAYS),
}
_HISTORY_NEEDED = max(MEAN_DAYS, TREND_DAYS)


@dataclass(frozen=True)
class Backtest:
    """One model's error on past windows of the horizon's length."""

    windows: int
    mae_usd: float  # mean |forecast - actual| of a window's spend
    mape: float | None  # mean |forecast - actual| / actual over windows that spent something


@dataclass(frozen=True)
class Forecast:
    """One tenant's month: spent so far and, with enough history, the forecast total."""

    tenant: str | None
    period: str  # YYYY-MM
    days_elapsed: int  # complete days of the period before today
    days_left: int  # today through the period's last day
    spent_to_date_usd: float  # on the complete days
    history_days: int  # complete days from the tenant's first spend to yesterday
    total_usd: float | None = None  # the forecast period total
    method: str | None = None
    backtest: Backtest | None = None
    budget_usd: float | None = None
    note: str = ""  # why there is no forecast

    @property
    def budget_share(self) -> float | None:
        if self.budget_usd is None or self.total_usd is None:
            return None
        return self.total_usd / self.budget_usd


def backtest(daily: np.ndarray, horizon: int, model: Model) -> Backtest | None:
    """``model``'s error over every window of ``daily`` it can be tried on; None if none."""
    predicted, actual = [], []
    for cut in range(_HISTORY_NEEDED, len(daily) - horizon + 1):
        predicted.append(model(daily[:cut], horizon))
        actual.append(float(daily[cut:cut + horizon].sum()))
    if not predicted:
        return None
    p, a = np.asarray(predicted), np.asarray(actual)
    err = np.abs(p - a)
    spent = a > 0
    mape = float((err[spent] / a[spent]).mean()) if spent.any() else None
    return Backtest(windows=len(p), mae_usd=float(err.mean()), mape=mape)


def daily_series(by_day: Mapping[str, float], today: dt.date) -> np.ndarray:
    """Spend per complete day (zero where nothing was logged) from the first day with a row
    to the day before ``today``."""
    days = sorted(d for d in by_day if dt.date.fromisoformat(d) < today)
    if not days:
        return np.zeros(0)
    first = dt.date.fromisoformat(days[0])
    out = np.zeros((today - first).days)
    for day in days:
        out[(dt.date.fromisoformat(day) - first).days] = by_day[day]
    return out


def forecast_month(tenant: str | None, by_day: Mapping[str, float], as_of: float, *,
                   budget_usd: float | None = None) -> Forecast:
    """The month containing ``as_of`` (Unix time, UTC) for one tenant, from its spend per
    day (``YYYY-MM-DD`` -> USD, as ``router.usage`` groups it)."""
    today = dt.datetime.fromtimestamp(as_of, dt.UTC).date()
    start = today.replace(day=1)
    length = calendar.monthrange(today.year, today.month)[1]
    daily = daily_series(by_day, today)
    elapsed = (today - start).days
    spent = float(sum(v for d, v in by_day.items() if start <= dt.date.fromisoformat(d) < today))
    base = Forecast(tenant=tenant, period=f"{today:%Y-%m}", days_elapsed=elapsed,
                    days_left=length - elapsed, spent_to_date_usd=spent,
                    history_days=len(daily), budget_usd=budget_usd)
    horizon = length - elapsed
    tried = {name: backtest(daily, horizon, model) for name, model in MODELS.items()}
    usable = {n: b for n, b in tried.items() if b is not None and b.windows >= MIN_WINDOWS}
    if not usable:
        need = _HISTORY_NEEDED + horizon + MIN_WINDOWS - 1
        days = f"{len(daily)} complete day{'' if len(daily) == 1 else 's'}"
        return replace(base, note=f"too little history: {days} of spend; a backtested "
                        f"forecast of the {horizon} days left needs {need}")
    # Ties go to the mean (the simpler model): dicts keep MODELS' order and min keeps the first.
    method = min(usable, key=lambda n: usable[n].mae_usd)
    total = spent + MODELS[method](daily, horizon)
    return replace(base, total_usd=total, method=method, backtest=usable[method])
