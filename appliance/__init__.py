"""Registratura: an offline voice IVR appliance for small clinics."""

__version__ = "0.1.0"
