"""promptopt: optimize the prompts, exemplars and code of LLM programs."""
