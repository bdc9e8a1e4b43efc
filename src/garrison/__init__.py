"""Garrison: a zero-trust access gateway and security control plane for restricted AI models."""

__version__ = "0.1.0"
