"""Leaf modules shared by the bench (flashing/), the operator backend (backend/)
and the CLI (homebox/). They import nothing of those packages.

    broker       parse_broker(): one parser of a broker address
    credentials  the master secret, per-box derived credentials, Mosquitto's hash
"""
