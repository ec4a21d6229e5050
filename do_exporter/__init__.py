"""do-exporter: a Prometheus exporter for Cloudflare Durable Objects."""

__version__ = "0.1.0"
