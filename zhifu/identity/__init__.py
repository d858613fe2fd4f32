"""Identity: who may act on the platform, and how they prove it.

Design overview. The context will own:

- **Customers**: a natural person identified by a PRC resident identity card
  number (GB 11643-1999) or, later, another identity document; a legal name;
  a mobile number (E.164) and an e-mail address as contact points.
- **Staff**: bank employees who use the operations console, with roles.
- **Credentials**: a password hashed with argon2id, checked against the
  password policy when it is set; later also passkeys (WebAuthn) as the
  preferred, phishing-resistant login.
- **MFA**: a second factor (TOTP, passkey); enrolling one lowers the minimum
  password length from 15 to 8 characters, as NIST SP 800-63B rev. 4 allows.
- **Sessions**: short-lived, revocable, bound to one customer or staff member.
- **Roles**: what a staff member may do in the console; sensitive operations
  will need two people (maker-checker).

Rules and invariants:

1. Everything a person types is stored only in its canonical form: resident
   ID with upper-case 'X', mobile in E.164, e-mail with a lower-case (and
   IDNA-encoded) domain, names in NFC. Two inputs that mean the same thing
   compare equal.
2. A resident ID, mobile number or password never appears in full in an
   error message or a log line: IDs and mobiles are masked, passwords never
   shown.
3. Passwords: at least 8 characters with MFA, 15 without, at most 128; any
   Unicode, no composition rules; not common, not repetitive, and not
   containing the customer's own name, e-mail or mobile. Compared after NFKC,
   so the same password typed on any keyboard matches.
4. An unknown account costs a login the same time as a wrong password
   (``PasswordHasher.dummy_verify``), so logins do not reveal who is a customer.

What exists so far:

- ``errors.py``: the root :class:`IdentityError` and the input errors.
- ``model.py`` (pure): resident ID parsing and masking, mobile numbers,
  e-mail addresses, names, and the password policy.
- ``passwords.py``: argon2id hashing (parameters measured and documented
  there) and the blocklist of common passwords.

Not built yet: customer and staff records (``service.py``, ``store.py``), MFA,
passkeys, sessions and roles.
"""
