"""Reusable Pulumi components of the private-llm platform: one concern each, no knowledge of stack files."""
