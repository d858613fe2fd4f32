"""Webhooks to merchants and partners: signed events, sent from the transactional outbox.

Design note
-----------

Why a context of its own. Webhooks are how every context tells partners what
happened (payments and refunds first, later accounts, clearing and risk), so
they belong to none of them: payments will call :func:`publish`, the way any
other context can. The context owns its tables (``webhooks_*``), its rules
and an outside system (recipients' HTTP endpoints, behind the transport port),
so it takes the same shape as the others:

- ``model.py``: pure rules: URLs, event-type patterns, event bodies, statuses, limits;
- ``signature.py``: pure: the signature scheme and ``verify_webhook``, the
  recipe a recipient follows (docs/payments.md, "Webhooks");
- ``errors.py``: ``WebhookError`` and its subclasses;
- ``store.py``: SQL; registers the encrypted secret column for key rotation;
- ``transport.py``: the HTTP port, with the real (httpx) and a fake implementation;
- ``service.py``: use cases, :func:`publish`, and the outbox handler.

Rules and invariants.

- Subscriptions belong to a partner key (``identity_partner_keys.key_id``);
  another key's subscription or delivery is "not found". A revoked key's
  subscriptions receive nothing more.
- An event is published in the transaction of the change it announces and
  leaves through the outbox (``zhifu.ops.outbox``), so nothing is sent for a
  change that rolled back, and everything committed is sent at least once.
  Recipients de-duplicate on ``Zhifu-Webhook-Id``, the event id.
- Every attempt is logged, the secret never is. A delivery ends
  ``succeeded`` (a 2xx), ``failed`` (the outbox's attempts ran out), or
  ``cancelled`` (its subscription was deleted or its key revoked first).
- Limits: the ``*_MAX`` constants of ``model.py`` and ``signature.py``, and
  the outbox's attempts, backoff and batch sizes.
"""
