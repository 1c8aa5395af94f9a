"""Object store port (`store.py`) and its adapters (`local.py`, `minio.py`)."""
