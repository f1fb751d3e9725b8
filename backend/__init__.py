"""The operator backend: ingest, fleet status, reports, reconcile and broker configuration.

Operators run it as `homebox ops ...`, or write their own against the contract
(docs/contract/). See docs/operator.md.
"""
