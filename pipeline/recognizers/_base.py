"""Shared shapes of our recognizers: regex spans, or spans read off spaCy's parse, in; Presidio
``RecognizerResult`` out."""

from __future__ import annotations

from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult


class SpanRecognizer(EntityRecognizer):
    """An ``EntityRecognizer`` whose subclass yields ``(start, end, score)`` from ``spans(text)``."""

    ENTITY = ""
    NAME = ""
    CONTEXT: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(
            supported_entities=[self.ENTITY], name=self.NAME, supported_language="en", context=list(self.CONTEXT)
        )

    def load(self) -> None:  # nothing to load: patterns are compiled at import
        pass

    def spans(self, text: str) -> list[tuple[int, int, float]]:
        raise NotImplementedError

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        if self.ENTITY not in entities:
            return []
        out = []
        for start, end, score in self.spans(text):
            explanation = AnalysisExplanation(recognizer=self.name, original_score=score, textual_explanation=self.NAME)
            out.append(RecognizerResult(
                self.ENTITY, start, end, score, analysis_explanation=explanation,
                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
            ))  # fmt: skip
        return out


class TokenRecognizer(EntityRecognizer):
    """A PERSON recognizer that reads spaCy's parse: a subclass yields character ``(start, end)``
    from ``token_spans(doc)``; ``ner_model`` names the spaCy package whose English word list it
    reads (``_words.english_words``)."""

    NAME = ""
    SCORE = 0.5
    EXPLANATION = ""

    def __init__(self, ner_model: str = "") -> None:
        self.ner_model = ner_model
        super().__init__(supported_entities=["PERSON"], name=self.NAME, supported_language="en")

    def load(self) -> None:
        from pipeline.recognizers._words import english_words, first_names

        first_names()
        english_words(self.ner_model)

    def token_spans(self, doc: Any) -> list[tuple[int, int]]:
        raise NotImplementedError

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        if "PERSON" not in entities or nlp_artifacts is None or nlp_artifacts.tokens is None:
            return []
        out = []
        for start, end in self.token_spans(nlp_artifacts.tokens):
            explanation = AnalysisExplanation(
                recognizer=self.name, original_score=self.SCORE, textual_explanation=self.EXPLANATION
            )
            out.append(RecognizerResult(
                "PERSON", start, end, self.SCORE, analysis_explanation=explanation,
                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
            ))  # fmt: skip
        return out
