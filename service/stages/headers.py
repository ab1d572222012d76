"""OpenAI's ``x-ratelimit-*`` response headers from an admission."""

from __future__ import annotations

from collections.abc import Sequence

from router.limits.windows import Admission, Charge


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``6m0s``, ``1.5s``, ``20ms``."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


def rate_headers(charges: Sequence[Charge], admission: Admission, kind: str
                 ) -> dict[str, str]:
    """``x-ratelimit-limit-<kind>``, ``-remaining-`` and ``-reset-`` of the per-minute window
    with the least room left (``kind``: requests or tokens); none without one."""
    minute = [i for i, c in enumerate(charges) if c.window_s >= 60]
    if not minute:
        return {}
    i = min(minute, key=lambda j: admission.remaining[j])
    return {f"x-ratelimit-limit-{kind}": f"{charges[i].limit:.0f}",
            f"x-ratelimit-remaining-{kind}": f"{max(admission.remaining[i], 0):.0f}",
            f"x-ratelimit-reset-{kind}": _duration(admission.reset_s[i])}
