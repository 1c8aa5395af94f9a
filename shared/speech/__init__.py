"""Spoken words: transcripts of audio uploads (pure data and transforms; the Whisper runtime
lives in `workers.speech`, loaded only by speech workers)."""
