"""A promptopt LLM provider from outside promptopt: ``parrot``."""
