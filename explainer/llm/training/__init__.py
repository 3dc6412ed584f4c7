"""Training code for the bundled model. Needs the ``train`` extra (PyTorch); the app never imports it."""
