"""Rate limits, concurrency caps and budgets, in-process and in Redis (``router.limits``)."""
