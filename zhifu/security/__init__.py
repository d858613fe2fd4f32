"""The security context: keys and the cryptography built on them.

Design note. The context covers envelope encryption of sensitive fields (a
data key per record, wrapped by a key-encryption key), the key ring that holds
and rotates those keys, tokenization of card and account numbers, and signing
(``signing.py``): Ed25519 signatures over the ledger journal's block heads, so a
counterparty can verify a published Merkle root without trusting our database.

Invariants:

- Secret key material never appears in a ``repr``, a log line, an error
  message or an exception chain; only public keys and key ids do.
- Key files are created with mode 0o600 and written atomically.
- Verification is a predicate: a bad signature or a malformed public key gives
  False, never an exception, so callers cannot mistake an error for a pass.
"""
