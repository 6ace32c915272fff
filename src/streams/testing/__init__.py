"""Real peers and helpers for tests and the local demo (not used in production paths)."""
