"""HTTP routes, one module per resource. Handlers are short; the work is in ``service``."""
