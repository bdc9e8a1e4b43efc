"""TLS files for both planes: the listeners' certificate and key, reloaded when they change
(``listener``), and the per-upstream CA bundle and client certificate (``upstream``)."""
