"""govtune: a governance-first pipeline for fine-tuning language models.

Each DVC stage is one module here (``python -m pipeline.<stage>``); shared pieces live in
``pipeline.common``. See README.md for the commands and docs/architecture.md for the design.
"""

__version__ = "0.1.0"
