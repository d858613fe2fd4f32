"""Payments: how money is asked for and paid, ahead of the ledger.

Design overview. The context will hold payment orders (what a merchant asks a
customer to pay, and its life from created to paid, expired or refunded), the
QR codes that carry such a request to a customer's phone (EMVCo
merchant-presented mode, ``emvco.py``), and refunds; the money itself moves
only through the ledger. What exists so far: ``errors.py`` (the root
:class:`PaymentError`), ``emvco.py``, the pure codec of EMVCo QR payloads,
and ``model.py``, the pure lifecycle of a payment order (states, allowed
transitions, history, refund bounds) and the idempotency-key rules.
"""
