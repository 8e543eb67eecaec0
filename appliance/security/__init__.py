"""Caller screening and SIP security: pure decisions (blocklist, rate blocks); the store keeps the facts."""
