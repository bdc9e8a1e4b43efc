"""Incident response: reports and evidence built from the audit log."""
