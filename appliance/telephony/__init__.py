"""Telephony: the Protocol the rest of the box sees, and its pjsua2 implementation behind one door."""
