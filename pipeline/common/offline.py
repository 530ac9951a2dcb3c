"""Keeps every stage offline: no model hub, no suffix-list download, no telemetry.

Call :func:`configure_offline` at the top of every ``main()`` (before heavy imports). The
test session additionally blocks sockets, so anything that still tries the network fails
loudly there instead of silently waiting on a time-out in production.
"""

from __future__ import annotations

import os

# Environment switches honoured by the libraries we use. Set, not defaulted, so a user's
# shell cannot accidentally turn downloads back on for a governed run.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never call the Hub
    "TRANSFORMERS_OFFLINE": "1",  # transformers: same, older switch
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",  # dvc: no usage analytics
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",  # great_expectations: no usage statistics
    "TOKENIZERS_PARALLELISM": "false",  # silences fork warnings from HF tokenizers
    # tldextract (used by Presidio's email recognizer) downloads the public suffix list on
    # first use unless given no URLs; with none it uses the snapshot bundled in the wheel.
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
}


def configure_offline() -> None:
    """Sets the offline environment and pins tldextract to its bundled snapshot.

    Idempotent. Safe to call before or after tldextract has been imported.
    """
    os.environ.update(OFFLINE_ENV)
    import sys

    module = sys.modules.get("tldextract.tldextract")
    if module is not None:
        # Created at import time from the environment; patch it if imported already.
        module.TLD_EXTRACTOR.suffix_list_urls = ()
