"""NudeNet (nudenet 3.4, YOLOv8n exported to ONNX, the model ships in the wheel) on CPU.

We run NudeNet's own pre- and post-processing (`nudenet.nudenet._read_image` /
`_postprocess`) on the image our decoder already produced, with an ONNX Runtime session of
our own: one intra-op thread, because CPU workers get their parallelism from processes (the
library's default session would start a thread per core in every process). The image is
handed over as a 3-channel BGR array, exactly what NudeNet gets when it decodes a file
itself; it is first shrunk to at most `MAX_SIDE_PX` per side — NudeNet pads to a square and
resizes to 320 px anyway, so this changes nothing it sees but bounds the cost of huge images.
Post-processing is NudeNet's own, class-agnostic non-maximum suppression included (one face
is reported as FACE_FEMALE or FACE_MALE, not both), so the scores equal what
``NudeDetector().detect`` reports for the same pixels.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from PIL import Image

from shared.media.decoded import DecodedMedia

INPUT_PX = 320
MAX_SIDE_PX = 2 * INPUT_PX


class NudeNetDetector:
    name = "nudenet"

    def __init__(self) -> None:
        import cv2
        import onnxruntime
        from nudenet import nudenet as library

        cv2.setNumThreads(1)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model_path = resources.files("nudenet").joinpath("320n.onnx")
        with resources.as_file(model_path) as path:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        self._input_name = self._session.get_inputs()[0].name
        self._read_image = library._read_image
        self._postprocess = library._postprocess

    def detect(self, media: DecodedMedia) -> dict[str, float]:
        """Label -> highest box confidence (labels with no box are absent)."""
        if media.image is None:
            raise ValueError("nudenet needs a decoded image")
        image = media.image
        if max(image.size) > MAX_SIDE_PX:
            scale = MAX_SIDE_PX / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)[:, :, ::-1])  # (H, W, 3)
        blob, x_ratio, y_ratio, x_pad, y_pad, width, height = self._read_image(bgr, INPUT_PX)
        outputs = self._session.run(None, {self._input_name: blob})
        detections = self._postprocess(outputs, x_pad, y_pad, x_ratio, y_ratio, width, height, INPUT_PX, INPUT_PX)
        scores: dict[str, float] = {}
        for detection in detections:
            label, score = str(detection["class"]), float(detection["score"])
            scores[label] = max(scores.get(label, 0.0), score)
        return scores
