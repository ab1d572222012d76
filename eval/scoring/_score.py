"""The result every reference scorer returns."""

from __future__ import annotations

from typing import Annotated

import msgspec


class Score(msgspec.Struct, frozen=True):
    """How good one answer is, in [0, 1], and why (``"extracted C, reference C"``)."""

    value: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    detail: str
