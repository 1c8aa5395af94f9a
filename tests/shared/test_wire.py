from __future__ import annotations

import msgpack
import numpy as np
import pytest

from shared.wire import pack_array, unpack_array


@pytest.mark.parametrize("dtype", ["uint8", "int64", "float16", "float32"])
def test_arrays_survive_a_msgpack_round_trip_bit_exactly(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) * 7).astype(dtype)
    wire = msgpack.packb(pack_array(array))
    restored = unpack_array(msgpack.unpackb(wire))
    assert restored.dtype == array.dtype and restored.shape == array.shape
    assert np.array_equal(restored, array)


def test_uint8_image_travels_as_raw_bytes_not_json_numbers() -> None:
    image = np.zeros((3, 224, 224), dtype=np.uint8)
    assert len(msgpack.packb(pack_array(image))) < 3 * 224 * 224 + 100


def test_object_dtypes_and_truncated_payloads_are_refused() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        pack_array(np.array(["a"], dtype=object))
    packed = pack_array(np.ones((4, 4), dtype=np.float32))
    packed["data"] = packed["data"][:-4]
    with pytest.raises(ValueError, match="shape"):
        unpack_array(packed)
