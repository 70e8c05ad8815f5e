"""The serving ceiling on this machine: one bare FastAPI route around onnxruntime (no validation,
routing, logging or metrics), the "bare route" of ../shared/notes/serving-anchors.md.

    BARE_ONNX=model.onnx uvicorn benchmarks.bare_route:app --port 8999
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["BARE_ONNX"], sess_options=options, providers=["CPUExecutionProvider"])
app = FastAPI()


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request) -> Response:
    body = orjson.loads(await request.body())
    tensor = body["inputs"][0]
    X = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    label, proba = session.run(None, {"input": X})
    out = {
        "model_name": model,
        "outputs": [
            {"name": "label", "data": label.tolist()},
            {"name": "probabilities", "data": proba.ravel().tolist()},
        ],
    }
    return Response(orjson.dumps(out), media_type="application/json")
