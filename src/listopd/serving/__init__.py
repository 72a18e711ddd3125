"""Layer 4 (beside experiments): an OpenAI-compatible HTTP server with batched generation."""
