"""The shared web layer, below the web apps and above the engine: what several apps need and none
owns. The engine singleton and its thread pool (``runner``), the socket plumbing both WebSocket
consumers share (``sockets``), and the page helpers every app's views use (``pages``). It imports
Django; ``explainer.lifecycle`` and ``explainer.llm`` below it never do. The layers are contracts
for import-linter in pyproject.toml, run by tests/test_layers.py."""
