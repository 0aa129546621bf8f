"""The same model served with LitServe, for `serve.py --litserve`: the alternative design
weighed against `seglab serve` (FastAPI + uvicorn with seglab's own batcher).

    python benchmarks/litserve_app.py CKPT PORT MAX_BATCH

One LitAPI: the body is JSON `{"image": base64 JPEG}` (LitServe hands a worker parsed JSON or
form fields, not a raw body), decoded with seglab's reader, batched by LitServe
(`max_batch_size`, `batch_timeout` 10 ms as serve.py's `max_wait_ms`), predicted by the same
`load_predictor` Predictor in resize mode, answered with the class-index PNG as base64. Needs
`pip install litserve` (not a seglab dependency).
"""

from __future__ import annotations

import base64
import sys

import cv2
import litserve as ls
import numpy as np

from seglab.prediction import load_predictor


class SegmentationAPI(ls.LitAPI):
    def __init__(self, ckpt: str, max_batch: int):
        super().__init__(max_batch_size=max_batch, batch_timeout=0.01)
        self.ckpt, self.max_batch = ckpt, max_batch

    def setup(self, device: str) -> None:
        self.predictor = load_predictor(self.ckpt, "cpu", mode="resize", batch_size=self.max_batch)

    def decode_request(self, request: dict) -> np.ndarray:
        data = np.frombuffer(base64.b64decode(request["image"]), np.uint8)
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return self.predictor.labels(images)

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, labels: np.ndarray) -> dict:
        _, png = cv2.imencode(".png", labels)
        return {"index_png": base64.b64encode(png.tobytes()).decode("ascii")}


if __name__ == "__main__":
    ckpt, port, max_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    server = ls.LitServer(SegmentationAPI(ckpt, max_batch), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False)
