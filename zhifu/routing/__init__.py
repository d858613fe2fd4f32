"""Smart routing: which rail should carry a payment that leaves the bank.

Design overview. For each payment the router lists the rails that can carry
it (currency, amount bounds, operating hours, health), scores each by the
expected total cost (fees, FX spread, and the cost of a failure weighted by
the rail's learned failure probability) and by expected time to settle, and
tries them best first, failing over on soft failures without ever paying
twice (the rails issue wires the connectors). What exists so far is the pure
model (``model.py``): rail profiles, the online success-rate estimator, the
circuit breaker, and the scoring and ordering of candidates.
"""
