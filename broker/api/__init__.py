"""The HTTP API: the app factory, route dependencies, problem answers, models, routes."""
