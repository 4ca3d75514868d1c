"""Image generation on the built-in model: OpenAI's images.generate (the docs' example and curl body) and Imagen's
native :predict answer real, decodable PNGs, deterministic for the prompt."""

from __future__ import annotations

import base64
import io
import json
import subprocess

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

TIMEOUT = 60


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    assert image.format == "PNG"
    return image


def test_docs_example_with_the_openai_sdk(server):
    client = OpenAI(api_key=server.api_key, base_url=server.base_url + "/v1beta/openai/", max_retries=0)
    response = client.images.generate(model="imagen-3.0-generate-002", prompt="a portrait of a sheepadoodle wearing a "
                                      "cape", response_format="b64_json", n=1)
    assert len(response.data) == 1 and decode(response.data[0].b64_json).size == (1024, 1024)
    two = client.images.generate(model="imagen-3.0-generate-002", prompt="a portrait of a sheepadoodle wearing a cape",
                                 response_format="b64_json", n=2, size="512x256")
    assert [decode(d.b64_json).size for d in two.data] == [(512, 256), (512, 256)]
    assert two.data[0].b64_json != two.data[1].b64_json
    again = client.images.generate(model="imagen-3.0-generate-002", prompt="a portrait of a sheepadoodle wearing a "
                                   "cape", response_format="b64_json", n=1)
    assert again.data[0].b64_json == response.data[0].b64_json  # same prompt, same picture
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="imagen-3.0-generate-002", prompt="x", response_format="b64_json", n=9)
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="gemini-2.5-flash", prompt="x", response_format="b64_json")
    for size in ("9" * 5000 + "x1", "1x" + "9" * 5000, "64x"):
        with pytest.raises(openai.BadRequestError) as err:
            client.images.generate(model="imagen-3.0-generate-002", prompt="x", response_format="b64_json", size=size)
        assert err.value.body[0]["error"]["message"].startswith("Invalid size"), err.value.body
    with pytest.raises(openai.BadRequestError) as err:  # Imagen reads at most 480 tokens of prompt
        client.images.generate(model="imagen-3.0-generate-002", prompt="a red square " * 400, response_format="b64_json")
    assert "at most 480 tokens" in err.value.body[0]["error"]["message"]


def test_docs_curl_body_with_its_trailing_comma(server):
    out = subprocess.run(["curl", "-s", f"{server.base_url}/v1beta/openai/images/generations",
                          "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {server.api_key}",
                          "-d", '''{
            "model": "imagen-3.0-generate-002",
            "prompt": "a portrait of a sheepadoodle wearing a cape",
            "response_format": "b64_json",
            "n": 1,
          }'''], capture_output=True, text=True, check=True, timeout=TIMEOUT)
    decode(json.loads(out.stdout)["data"][0]["b64_json"])


def test_native_imagen_predict(server):
    r = httpx.post(f"{server.base_url}/v1beta/models/imagen-4.0-generate-001:predict", timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key},
                   json={"instances": [{"prompt": "Robot holding a red skateboard"}],
                         "parameters": {"sampleCount": 2, "aspectRatio": "16:9"}})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["mimeType"] for p in predictions] == ["image/png", "image/png"]
    assert decode(predictions[0]["bytesBase64Encoded"]).size == (1408, 768)
    bad = httpx.post(f"{server.base_url}/v1beta/models/imagen-4.0-generate-001:predict", timeout=TIMEOUT,
                     headers={"x-goog-api-key": server.api_key},
                     json={"instances": [{"prompt": "x"}], "parameters": {"aspectRatio": "2:1"}})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_configured_diffusers_engine(tmp_path):
    import tiny_models
    from conftest import start_server

    pipeline = tiny_models.build_tiny_sd(tiny_models.models_root())
    config = f"""
[models."imagen-3.0-generate-002"]
engine = "diffusers"
engine_options = {{ source = "{pipeline}", steps = 2 }}
"""
    with start_server(tmp_path / "data", config=config) as srv:
        client = OpenAI(api_key=srv.api_key, base_url=srv.base_url + "/v1beta/openai/", max_retries=0)
        response = client.images.generate(model="imagen-3.0-generate-002", prompt="a red square",
                                          response_format="b64_json", n=2, size="96x64")
        images = [decode(d.b64_json) for d in response.data]
        assert [i.size for i in images] == [(96, 64), (96, 64)]
        from pollux.images.painter import paint
        assert base64.b64decode(response.data[0].b64_json) != paint("imagen-3.0-generate-002", "a red square", 0, 96,
                                                                    64)  # the pipeline made it, not the painter
        painted = client.images.generate(model="imagen-4.0-generate-001", prompt="a red square",
                                         response_format="b64_json", n=1, size="96x64")  # still the emulator
        assert decode(painted.data[0].b64_json).size == (96, 64)
        assert "loading image pipeline" in srv.log()
