"""teegate: an OpenAI-compatible gateway for confidential LLM inference."""
