"""The sans-IO core: parsing, routing, member health, session stores, sharing rules.

Nothing here opens a socket, starts a thread or touches the Twisted reactor; the
adapters in `rtp_cluster.adapters` carry out what the core decides.
"""
