"""The double-entry ledger.

Design overview (TigerBeetle's semantics, kept in SQL):

- An **account** has a currency, a type ``code``, balance ``flags`` and four
  counters: ``debits_pending``, ``debits_posted``, ``credits_pending``,
  ``credits_posted``. Counters only ever grow, except pending counters, which
  shrink when a hold is posted, voided or expires.
- A **transfer** moves ``amount`` minor units from its debit account to its
  credit account, in the currency both accounts hold. Transfers are never
  updated or deleted; a mistake is corrected by a reversal, a new transfer in
  the other direction that points at the one it corrects.
- **Two-phase** transfers: a ``pending`` transfer reserves the amount; a later
  ``post_pending`` transfer posts all or part of it, a ``void_pending`` transfer
  releases it, and a hold whose timeout passes is voided by the expiry sweep.
  A pending transfer is resolved at most once (a unique index enforces it).
- **Linked** transfers (the ``linked`` flag chains an event to the next one)
  commit or fail together.
- The client-chosen transfer id is the idempotency key. A retry with the same
  fields answers ``exists``; with other fields, the first differing field's
  ``exists_with_different_*`` code. An id that failed on the ledger's state
  stays failed: a retry gets the same code back.
- Result codes are checked in the documented order of :class:`Result`
  (docs/ledger.md lists it); the first failing check decides.

Invariants (checked by ``zhifu ledger verify``):

1. Per currency, the sum of all debits equals the sum of all credits.
2. Every account's counters equal the sums of its transfers.
3. No account breaks its balance flag.
4. Every committed batch's Merkle root matches its transfers, and the chain of
   signed blocks verifies from the first block to the head.
"""
