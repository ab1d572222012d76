"""Who may call and what they may spend: tenants, API keys, the audit log (and, to come, rate
limits and budgets), kept in SQLite or PostgreSQL (``router.governance.db``)."""
