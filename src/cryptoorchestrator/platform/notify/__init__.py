"""Notifications: fills, bot errors, risk breaches and the kill switch, sent to the user.

A fact and its notification rows are committed in one transaction (:mod:`.outbox`); the
:class:`~.dispatcher.Dispatcher` claims due rows atomically, sends them (signed webhooks,
Telegram, Discord, Slack, email; :mod:`.transports`), retries with backoff and dead-letters.
Delivery is at least once, with a stable idempotency key per message that receivers dedupe on.

Import the submodules directly (``from cryptoorchestrator.platform.notify import outbox``);
this package imports nothing, so :mod:`cryptoorchestrator.platform.settings` can use
:mod:`.config` without an import cycle.
"""
