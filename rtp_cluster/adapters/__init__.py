"""Adapters: Twisted servers and clients, Redis connections, the admin line protocol and the
runtime that wires them to the core."""
