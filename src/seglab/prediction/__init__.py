"""Prediction: one API for everything that turns images into masks with a trained model.

    from seglab.prediction import load_predictor

    predictor = load_predictor("best.ckpt")            # or "model.onnx"; mode=, flip=, scales=
    mask = predictor.predict(rgb_uint8_image)           # (H, W) class indices, any image size
    logits = predictor.logits(images)                   # [(C, H, W) float32 tensors]
    probabilities = predictor.probabilities(images)     # [(C, H, W) softmax]

Modules, one concept each: `info` (ModelInfo: classes, size, normalisation), `checkpoint`
(a .ckpt -> network), `onnx` (a checkpoint as an ONNX model, and that model as a network),
`load` (a path -> Predictor), `predictor` (modes, TTA, the preprocessing of
`seglab.preprocessing`), `geometry` (padding, tiles), `strips` (slide blending, strip by
strip), `inputs` (finding and decoding images), `writers` (masks, probabilities, the CVAT zip),
`streaming` (huge images: outputs written as their strips are predicted), `scoring`
(`labels=`), `run` (predict.py).
"""

from seglab.prediction.checkpoint import load_checkpoint
from seglab.prediction.info import ModelInfo
from seglab.prediction.load import load_predictor
from seglab.prediction.predictor import MODES, Predictor, Prepared

__all__ = ["MODES", "ModelInfo", "Predictor", "Prepared", "load_checkpoint", "load_predictor"]
