"""Shared shape of our recognizers: regex spans in, Presidio ``RecognizerResult`` out."""

from __future__ import annotations

from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult


class SpanRecognizer(EntityRecognizer):
    """An ``EntityRecognizer`` whose subclass yields ``(start, end, score)`` from ``spans(text)``."""

    ENTITY = ""
    NAME = ""
    CONTEXT: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(supported_entities=[self.ENTITY], name=self.NAME, supported_language="en", context=list(self.CONTEXT))

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
