"""The one error a model folder raises when it cannot be opened."""


class ModelLoadError(ValueError):
    """A model folder that cannot be opened; the message names the file and what is wrong."""
