"""The bundled language model: tokenizer, transformer forward pass and sampling, in numpy.

Inference here multiplies small matrices (one token at a time while decoding). OpenBLAS's
worker threads cost more than they save at that size, and on a busy machine they spin
against each other, so the app asks for one BLAS thread per process unless told otherwise;
concurrency comes from running requests side by side instead.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
