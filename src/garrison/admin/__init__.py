"""The admin API: authenticated, authorised by role, audited."""
