"""The gateway on a static routing table: chat is routed on the table, /v1/embeddings still
serves the transformer's vectors."""

import numpy as np
from litestar.testing import TestClient

from service.app import create_app
from tests.static_tables import two_model_config


def test_embeddings_stay_minilm_when_routing_reads_a_table(tmp_path, static_router, encoder_dir,
                                                           encoder):
    folder, out = static_router
    config = two_model_config(tmp_path, folder, encoder_dir, out)
    texts = ["route this prompt", "and this one"]
    with TestClient(create_app(config)) as c:
        chat = c.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "explain tax law"}]})
        assert chat.status_code == 200
        assert chat.headers["x-contextforge-model"] in {"big", "small"}
        for body in ({"model": "all-MiniLM-L6-v2", "input": texts, "encoding_format": "float"},
                     {"model": "all-MiniLM-L6-v2", "input": texts[0],
                      "encoding_format": "float"}):
            r = c.post("/v1/embeddings", json=body)
            assert r.status_code == 200, r.text
            got = np.array([d["embedding"] for d in r.json()["data"]])
            want = encoder.encode(texts)[: len(got)]
            assert got.shape[1] == 384
            np.testing.assert_allclose(got, want, atol=1e-5)
        assert c.post("/v1/embeddings", json={"model": "tiny-static",
                                              "input": "x"}).status_code == 404
