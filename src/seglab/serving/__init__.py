"""Serving: `seglab serve ckpt=PATH` puts models behind an HTTP API and the inference page.

Modules, one concept each: `models` (files -> named Predictors), `batcher` (requests that arrive
together share a forward pass), `responses` (masks as PNG or JSON), `app` (the routes, the
page), `server` (the command: options, loading, uvicorn). FastAPI and uvicorn are the optional
extra `seglab[serve]`.
"""
