"""The one error a model folder can raise (defined with the model interface, which callers import it from)."""
from explainer.llm.interface import ModelLoadError

__all__ = ["ModelLoadError"]
