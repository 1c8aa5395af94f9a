"""Abusive-language classifier for text: alt-profanity-check (a linear SVM over character
and word n-grams, trained on ~200k human-labelled comments; model and vectorizer ship in
the wheel as joblib files). It scores offensive, insulting and profane language; it does
not understand context, irony or threats phrased politely (the zero-shot ``harassment``
prompts are the second opinion)."""

from __future__ import annotations

from shared.media.decoded import DecodedMedia


class ProfanityDetector:
    name = "profanity"

    def __init__(self) -> None:
        from profanity_check import predict_prob  # loads the model (about 1.5 s)

        self._predict_prob = predict_prob

    def detect(self, media: DecodedMedia) -> dict[str, float]:
        """``{"offensive": probability}``."""
        if media.text is None:
            raise ValueError("profanity needs decoded text")
        return {"offensive": float(self._predict_prob([media.text])[0])}
