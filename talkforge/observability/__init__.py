"""Health, metrics, logs and error reporting: ``/healthz``, ``/readyz``, ``/metrics`` (middleware.py),
readiness checks (checks.py), Prometheus metrics (metrics.py), JSON log lines and request ids (logs.py),
and Sentry (sentry.py, started by apps.py when SENTRY_DSN is set)."""
