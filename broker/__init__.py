"""The broker: clients, staging tokens, sealed credentials, audit log (docs/architecture.md)."""

__version__ = "0.1.0"
