"""The request path: per request, route and admit (pure; the gateway and replay drive it)."""
