"""The Lifecycle Explainer.

Inference here multiplies small matrices (one token at a time while decoding). OpenBLAS's
worker threads cost more than they save at that size, and on a busy machine they spin
against each other, so the app asks for one BLAS thread per process unless told otherwise;
concurrency comes from running requests side by side instead. This must happen before
numpy is first imported, so it lives in the top package.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
