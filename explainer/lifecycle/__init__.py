"""The request lifecycle engine: pure Python over explainer.llm, no Django."""
