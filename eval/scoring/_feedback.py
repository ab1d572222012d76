"""Users' ratings as a score.

``POST /v1/feedback`` accepts a rating in [0, 1] (0 worst, 1 best, like the training data's
scores), so a rating already is a score; several ratings of one request average. Ratings a log
could hold that the endpoint would have refused (out of range, NaN) are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from eval.scoring._score import Score


def feedback(ratings: Iterable[float]) -> Score | None:
    """The mean of one request's ratings, or None when it has no usable rating."""
    ratings = list(ratings)
    usable = [float(r) for r in ratings if math.isfinite(r) and 0.0 <= r <= 1.0]
    ignored = len(ratings) - len(usable)
    note = f"; ignored {ignored} outside [0, 1]" if ignored else ""
    if not usable:
        return None
    mean = math.fsum(usable) / len(usable)
    plural = "rating" if len(usable) == 1 else "ratings"
    return Score(mean, f"mean of {len(usable)} user {plural}{note}")
