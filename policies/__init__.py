"""The private-llm compliance policy pack: importable rules shared by CrossGuard and the offline checker."""
