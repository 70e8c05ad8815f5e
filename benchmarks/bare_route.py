"""The serving ceiling on this machine: one bare FastAPI route around onnxruntime (no validation,
routing, logging or metrics), the "bare route" of ../shared/notes/serving-anchors.md.

    BARE_ONNX=model.onnx uvicorn benchmarks.bare_route:app --port 8999

A graph with one ``input`` (all-numeric models) takes the request's first tensor as its
``[N, F]`` matrix; a graph with one input per feature (typed features, :mod:`shared.features`)
takes each V2 tensor as the input of its name: BYTES as strings, anything else as float32.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["BARE_ONNX"], sess_options=options, providers=["CPUExecutionProvider"])
per_feature = [i.name for i in session.get_inputs()] != ["input"]
app = FastAPI()


def feeds(body: dict[str, Any]) -> dict[str, np.ndarray]:
    if not per_feature:
        tensor = body["inputs"][0]
        return {"input": np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])}
    return {
        t["name"]: np.array(t["data"], dtype=object if t["datatype"] == "BYTES" else np.float32).reshape(-1, 1)
        for t in body["inputs"]
    }


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request) -> Response:
    body = orjson.loads(await request.body())
    label, proba = session.run(None, feeds(body))
    out = {
        "model_name": model,
        "outputs": [
            {"name": "label", "data": label.tolist()},
            {"name": "probabilities", "data": proba.ravel().tolist()},
        ],
    }
    return Response(orjson.dumps(out), media_type="application/json")
