"""Merchants: shops that take payments by QR code, customers' payment codes, refunds.

Design note
-----------

The context owns merchants, the QR codes issued to them and the one-time
payment codes customers show at a till. Money moves only as payment orders of
the payments context (``PaymentsService.execute``): a merchant payment is an
order of kind ``merchant`` with ``merchant_id`` set, a refund an order of kind
``refund`` pointing at it (``refund_of``). The files: ``model.py`` (pure
rules), ``errors.py``, ``store.py`` (SQL, the caller's connection),
``service.py`` (use cases); the API is ``zhifu/api/routers/merchants.py`` and
the whole picture is in docs/payments.md, "Merchants and QR payments".

Onboarding. A business owner signs in as a customer and onboards a shop with
one of their own open Class I accounts as its settlement account; the
merchant takes that account's currency and starts ``pending``. Bank staff
holding ``partners.manage`` approve it and name the partner key (with the
``merchant`` scope) its point of sale signs with: it is then ``active`` and
takes payments. Approval is idempotent (the same key again answers the same);
another key is refused. A merchant's name and city are EMVCo text (printable
ASCII, 25 and 15 characters); a Chinese name and city go in the language
template (tag 64). The category code is ISO 18245: four digits outside the
reserved ranges, and not one of :data:`~zhifu.merchants.model.MCC_REFUSED`.
Nothing here is personal data (names of shops are public, on every code), so
nothing is encrypted; payment codes are stored only as a keyed blind index.

Who may act. The owner (a customer session) and the merchant's partner key
(a signed request with the ``merchant`` scope) act on the merchant; anybody
else, another customer or another key, finds no such merchant (404). A
pending merchant is visible to its owner only.

QR codes (EMV QRCPS MPM). Every code carries the template at ID 26 with GUI
``cn.zhifu``, the merchant id (01) and the code's own id (02). A static code
has no amount: the payer enters it, and it pays any number of times. A dynamic
code has the amount (54), the merchant's order reference (62.05), an expiry
(60 s to 24 h, 15 min by default), and pays exactly once. A scanned payload
must be exactly the one issued: its CRC proves only a faithful copy, so an
altered amount or name with a fresh CRC is refused. The payer's amount is
required for a static code and, if given, must equal a dynamic code's.

Payment codes. 18 digits: the bank's prefix ``88``, 15 random digits and a
Luhn digit (a till's misread is caught before any look-up). A code lives 60
seconds, draws on one account, pays once, up to its cap (by default just
under the step-up amount; a higher cap needs the customer's step-up when the
code is made). A customer has at most five live codes. The code's row is
locked and marked used in the payment's own transaction, so two tills
presenting one code pay once. A partner key that presents 20 unusable codes
(unknown, expired, used) within a minute waits until the minute ends (429).

Refunds. The owner or the point of sale refunds a settled merchant payment,
in full or in parts, up to what was paid, within 365 days, at most 50 times.
The original order is locked from the check to the raise of its
``refunded_minor`` (a table check backs it up), so concurrent refunds never
exceed the amount. Refunds apply no spending limits: the money goes back.

Webhooks. ``payment.succeeded`` and ``refund.succeeded`` go to the merchant's
partner key through the transactional outbox, published inside the payment's
own transaction: sent exactly when it commits.

Idempotency. Every POST takes an ``Idempotency-Key``. Payments and refunds
keep theirs with the payments context's; merchants, QR codes and payment
codes in ``merchants_idempotency``. The same key and request answer the first
result again (a payment code's digits excepted: they are never stored, so a
replay answers without them); another request under the key is a conflict.
"""
