"""Accounts: a customer's bank accounts and the debit cards that reach them.

Design overview. The context owns:

- **Accounts**: a product (``current`` or ``savings``) in one currency, of a
  PBOC personal account class (I, II or III), with a 19-digit account number,
  a status (open, frozen, closed) and a nickname the customer chooses. The
  money itself lives in the ledger: an account here points at one ledger
  account and never keeps a balance of its own.
- **Limits**: what may move through each channel (counter, online, mobile,
  QR, card) in each direction, per payment, per day, per year, and the
  highest balance; the customer's own lower limits.
- **Debit cards**: a PAN with the issuer's BIN, an expiry month, a status
  (active, frozen, lost, closed) and a token that stands for the PAN
  everywhere outside the card vault.

Rules and invariants:

1. Account classes follow the PBOC (Yinfa [2016] No. 302, Yinfa [2018]
   No. 16). Class I has no regulatory limit. Class II: money in from
   non-bound accounts and cash deposits at most CNY 10,000 a day and
   200,000 a year; payments, transfers out to non-bound accounts and cash
   withdrawals, together, the same. Class III: money in from non-bound
   accounts at most CNY 5,000 a day and 100,000 a year; payments and
   transfers out at most CNY 2,000 a day and 50,000 a year; the balance at
   most CNY 2,000 at any moment. Transfers with the bound Class I account
   count toward none of these, but the Class III balance cap still applies.
   Class III accounts get the ``current`` product only.
2. Class II and III accounts hold CNY only: their limits are set in CNY,
   and converting them at a moving exchange rate would give a limit that
   changes every day. Foreign currency (USD, EUR, HKD, JPY, GBP) is held in
   Class I accounts, whose default limits are none. Every limit is a
   :class:`~zhifu.money.Money` in the policy's own currency; an amount in
   another currency is refused, never converted.
3. Limits only go down. The bank's policy per (class, channel, direction,
   currency) may lower the PBOC limits but never raise them; a customer's
   limit may lower the bank's but never raise it. The lower of the two
   applies; zero turns a channel off.
4. Limits count the account's totals across all channels: a channel's policy
   narrows what that channel may do, but spending through one channel still
   uses up the allowance of every other. Days and years are the Shanghai
   calendar's (00:00 Beijing time, 1 January), whatever the server's zone.
5. A payment is checked against its limits in a fixed order: per payment,
   daily, yearly, balance. The error names the first limit broken, who set it
   (bank or customer) and how much is still allowed.
6. Account numbers are 19 digits: a 4-digit bank code, a 4-digit branch
   code, a 10-digit serial and a Luhn check digit. Bank codes never start
   with 0 (lost in spreadsheets) or 9 (tokens). Serials may be sequential: an
   account number is given out to be paid, it is not a secret.
7. Card numbers (PANs) are 16 or 19 digits with the issuer's 6-digit BIN and
   a Luhn check digit; their serials are random, so that one card does not
   reveal its neighbours. A PAN is shown only masked (first six, last four:
   PCI DSS); an account number only its last four digits.
8. A card token is 19 digits starting with 9 whose last digit deliberately
   fails the Luhn check (the Luhn digit plus 5, mod 10): no token is ever
   taken for a PAN, and no PAN for a token, while a mistyped token digit is
   still caught.
9. Account status: open <-> frozen; open -> closed only when the ledger
   account is settled at zero (posted debits equal posted credits, nothing
   pending either way); closed is final. A frozen account cannot be closed
   (a freeze, judicial ones included, is not escaped by closing) and lets
   money in but none out.
10. Card status: active <-> frozen; active or frozen -> lost, which blocks the
    card at once and for good; active or frozen -> closed, also final. A lost
    card is replaced by a new card (new PAN, new token), which starts active.
    A card pays only when active and not past the last day of its expiry month.
11. Nicknames are 1 to 32 characters after NFC, with runs of spaces made one;
    no control, invisible or line-break characters.

12. An account row and its ledger account share one id; the ledger account is
    created first, so an account row always has one. At most one default
    account per customer and currency (checked again by a partial unique
    index). A card number is stored only encrypted, found by a blind index,
    and shown masked; it never reaches an audit event or a log.

The files: ``errors.py`` (the root :class:`AccountsError`), ``model.py``
(pure: the rules above), ``store.py`` (SQL), ``service.py`` (the use cases:
opening, balances, nicknames and defaults, freezing, closing, cards, teller
cash; its docstring says how the two stores stay consistent) and the API in
``zhifu/api/routers/accounts.py``; docs/accounts.md for the whole picture.
Not built yet: binding Class II/III accounts to a Class I account, and the
running totals that daily and yearly limits need (with payments).
"""
