"""Adapters: translation between our contracts (``schemas``) and the outside world
(Kafka, PostgreSQL, Redis, Slack, SMTP, the ad platforms' SDKs).  They import only
``schemas`` and ``ground``."""
