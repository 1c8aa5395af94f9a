"""Result webhooks (`omnibind webhooks`): every result on ``{prefix}:results`` of a source
that has a target is POSTed there as signed JSON.

* `targets` — which target a result goes to (by the upload's source), and its JSON body;
* `signing` — the ``Omnibind-Signature`` header (HMAC-SHA256 over ``<timestamp>.<body>``)
  and `verify_signature` for receivers written in Python;
* `sender` — one delivery: attempts with exponential backoff, a final outcome;
* `delivery_log` — ``{prefix}:webhooks:deliveries``, one entry per final outcome;
* `dispatcher` — the consumer-group loop: a result is acknowledged only after its delivery
  reached a final outcome and was logged, so a dispatcher crash redelivers, never loses.

Delivery is at least once: receivers deduplicate by the ``Omnibind-Delivery`` header.
"""
