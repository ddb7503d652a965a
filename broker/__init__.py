"""The broker: clients, staging tokens, sealed credentials, audit log (see DESIGN.md)."""

__version__ = "0.1.0"
