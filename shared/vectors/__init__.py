"""Vector store port (`store.py`), its record type (`records.py`), the property schema both
backends store (`properties.py`), write/search checks (`validation.py`), the adapters
(`lancedb.py`: embedded default, `weaviate.py`: production) and `factory.open_vector_store`."""
