"""Vector store port (`store.py`), its record type (`records.py`) and adapters
(`lancedb.py`: embedded default, `weaviate.py`: production)."""
