"""The bundled language model: tokenizer, transformer forward pass and sampling, in numpy.

(One BLAS thread per process is asked for in ``explainer/__init__.py``, before numpy loads.)
"""
