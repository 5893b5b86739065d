"""The private-llm Pulumi program: stack config, capacity planning, platform composition and the offline engine."""
