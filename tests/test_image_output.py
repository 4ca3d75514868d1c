"""Pictures from generateContent (Nano Banana): responseModalities IMAGE on the image-output models answers inline
PNG parts, sized by imageConfig as Gemini sizes them and billed as Gemini bills them, through the google-genai SDK
(parts, as_image, streams, chats), REST and the openai SDK."""

from __future__ import annotations

import base64
import io
import json

import httpx
import media
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

FLASH_IMAGE = "gemini-2.5-flash-image"
PRO_IMAGE = "gemini-3-pro-image-preview"
# The two image-output ids as the catalogue describes them (the config makes the tests independent of it).
CONFIG = f"""
[models."{FLASH_IMAGE}"]
base = "gemini-2.5-flash"
output_modalities = ["TEXT", "IMAGE"]
thinking = false

[models."{PRO_IMAGE}"]
base = "gemini-3-pro-preview"
output_modalities = ["TEXT", "IMAGE"]
"""
# Gemini 2.5 Flash Image's sizes per aspect ratio (the image-generation docs' table), 1290 tokens each.
FLASH_SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
               "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from conftest import start_server
    with start_server(tmp_path_factory.mktemp("image-output") / "data", config=CONFIG) as server:
        yield server


@pytest.fixture
def client(srv):
    return genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))


def png(part: types.Part) -> Image.Image:
    """The part's picture, decoded: it must be a real PNG."""
    assert part.inline_data.mime_type == "image/png"
    image = Image.open(io.BytesIO(part.as_image().image_bytes))
    image.load()
    assert image.format == "PNG"
    return image


def output_details(response: types.GenerateContentResponse) -> dict[str, int]:
    return {d.modality.name: d.token_count for d in response.usage_metadata.candidates_tokens_details}


def test_text_and_picture_with_the_sdk(client):
    response = client.models.generate_content(
        model=FLASH_IMAGE, contents="Create a picture of a nano banana dish in a fancy restaurant",
        config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"], seed=5,
                                           image_config=types.ImageConfig(aspect_ratio="16:9")))
    pictures = [p for p in response.parts if p.inline_data is not None]
    assert len(pictures) == 1 and png(pictures[0]).size == (1344, 768)
    assert response.text  # the text part beside the picture
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    details = output_details(response)
    assert details["IMAGE"] == 1290 and details["TEXT"] > 0  # Gemini 2.5 Flash Image bills 1290 tokens a picture
    assert usage.candidates_token_count == details["IMAGE"] + details["TEXT"]
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count


def test_same_prompt_and_seed_same_picture(client):
    def picture(prompt: str, seed: int) -> bytes:
        response = client.models.generate_content(
            model=FLASH_IMAGE, contents=prompt,
            config=types.GenerateContentConfig(response_modalities=["IMAGE"], seed=seed))
        return response.parts[0].inline_data.data

    first = picture("A red bicycle leaning on a wall", 1)
    assert picture("A red bicycle leaning on a wall", 1) == first
    assert picture("A red bicycle leaning on a wall", 2) != first
    assert picture("A blue bicycle leaning on a wall", 1) != first


def test_image_only_answer(client):
    response = client.models.generate_content(
        model=FLASH_IMAGE, contents="A watercolour fox",
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]))
    assert [p.inline_data is not None for p in response.parts] == [True]
    assert png(response.parts[0]).size == (1024, 1024)  # square unless asked otherwise
    assert response.text is None
    assert output_details(response) == {"IMAGE": 1290}
    assert response.usage_metadata.candidates_token_count == 1290


def test_an_image_model_answers_text_and_picture_by_default(client):
    # Gemini's image models answer with text and a picture when responseModalities is not set.
    response = client.models.generate_content(model=FLASH_IMAGE, contents="A lighthouse at dawn")
    assert response.text
    assert [png(p).size for p in response.parts if p.inline_data] == [(1024, 1024)]


def test_every_aspect_ratio_over_rest(srv):
    url = f"{srv.base_url}/v1beta/models/{FLASH_IMAGE}:generateContent"
    for ratio, size in FLASH_SIZES.items():
        r = httpx.post(url, headers={"x-goog-api-key": srv.api_key}, timeout=60, json={
            "contents": [{"role": "user", "parts": [{"text": "A mountain lake"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": ratio}}})
        assert r.status_code == 200, r.text
        part = r.json()["candidates"][0]["content"]["parts"][0]
        assert list(part) == ["inlineData"] and part["inlineData"]["mimeType"] == "image/png"
        assert Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"]))).size == size, ratio


def test_gemini_3_pro_image_sizes_and_tokens(client):
    # 1K, 2K and 4K: 1120 tokens at 1K and 2K, 2000 at 4K (Gemini 3 Pro Image's billing).
    for ratio, image_size, size, tokens in (("1:1", "1K", (1024, 1024), 1120), ("16:9", "2K", (2752, 1536), 1120),
                                            ("1:1", "4K", (4096, 4096), 2000)):
        response = client.models.generate_content(
            model=PRO_IMAGE, contents="A city at night",
            config=types.GenerateContentConfig(response_modalities=["IMAGE"], image_config=types.ImageConfig(
                aspect_ratio=ratio, image_size=image_size)))
        picture = next(p for p in response.parts if p.inline_data)
        assert png(picture).size == size
        assert output_details(response) == {"IMAGE": tokens}
    with pytest.raises(errors.ClientError) as err:  # an upper-case K only, as Gemini takes it
        client.models.generate_content(model=PRO_IMAGE, contents="x", config=types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(image_size="1k")))
    assert err.value.code == 400 and "1k" in err.value.message


def test_gemini_3_signs_the_picture_and_takes_the_turn_back(client):
    chat = client.chats.create(model=PRO_IMAGE, config=types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"]))
    first = chat.send_message("Draw a red kite")
    picture = next(p for p in first.parts if p.inline_data)
    assert picture.thought_signature  # Gemini 3 signs its last part: here the picture
    second = chat.send_message("Now make it blue")  # the signed picture goes back in the history
    assert [png(p).size for p in second.parts if p.inline_data] == [(1024, 1024)]


def test_requests_gemini_refuses(client):
    def refused(model: str, **config) -> str:
        with pytest.raises(errors.ClientError) as err:
            client.models.generate_content(model=model, contents="x", config=types.GenerateContentConfig(**config))
        assert err.value.code == 400
        return err.value.message

    assert "2:1" in refused(FLASH_IMAGE, image_config=types.ImageConfig(aspect_ratio="2:1"))
    assert "2K" in refused(FLASH_IMAGE, image_config=types.ImageConfig(image_size="2K"))  # 2.5 renders 1K only
    assert refused("gemini-2.5-flash", response_modalities=["TEXT", "IMAGE"]) == \
        "Model does not support the requested response modalities: image"
    assert "image_config" in refused("gemini-2.5-flash", image_config=types.ImageConfig(aspect_ratio="1:1"))
    assert "Multiple candidates" in refused(FLASH_IMAGE, response_modalities=["IMAGE"], candidate_count=2)


def test_a_streamed_picture_is_the_last_chunk(client):
    config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"], seed=3,
                                         image_config=types.ImageConfig(aspect_ratio="4:3"))
    whole = client.models.generate_content(model=FLASH_IMAGE, contents="A tram in the rain", config=config)
    chunks = list(client.models.generate_content_stream(model=FLASH_IMAGE, contents="A tram in the rain",
                                                        config=config))
    last = chunks[-1]
    assert [p.inline_data is not None for p in last.parts] == [True]  # the picture, in a chunk of its own
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.parts[0].inline_data.data == next(p for p in whole.parts if p.inline_data).inline_data.data
    assert all(p.text and not p.inline_data for c in chunks[:-1] for p in c.parts)
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert "".join(c.text or "" for c in chunks[:-1]) == whole.text
    assert last.usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count
    assert output_details(last) == output_details(whole)


def test_an_edit_keeps_the_input_pictures_shape(client):
    source = types.Part.from_bytes(data=media.bridge_png(), mime_type="image/png")  # 768x1408, portrait
    response = client.models.generate_content(
        model=FLASH_IMAGE, contents=[source, "Make the sky purple"],
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]))
    # Without an aspect ratio the answer takes the input's nearest one (9:16), as Gemini's edits do.
    assert png(response.parts[0]).size == FLASH_SIZES["9:16"]
    prompt = {d.modality.name: d.token_count for d in response.usage_metadata.prompt_tokens_details}
    assert prompt["IMAGE"] > 0 and prompt["TEXT"] > 0


def test_a_chat_edits_its_own_picture(client):
    chat = client.chats.create(model=FLASH_IMAGE, config=types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"], image_config=types.ImageConfig(aspect_ratio="3:2")))
    first = chat.send_message("Draw a lighthouse")
    second = chat.send_message("Now at night")
    for response in (first, second):
        assert [png(p).size for p in response.parts if p.inline_data] == [FLASH_SIZES["3:2"]]
    assert any(p.inline_data for p in chat.get_history()[1].parts)
    # The first picture went back as the model's turn, so the second prompt reads it.
    prompt = {d.modality.name: d.token_count for d in second.usage_metadata.prompt_tokens_details}
    assert prompt.get("IMAGE", 0) > 0


def test_count_tokens_on_an_image_model(client):
    counted = client.models.count_tokens(model=FLASH_IMAGE, contents="A lighthouse at dawn")
    response = client.models.generate_content(model=FLASH_IMAGE, contents="A lighthouse at dawn")
    assert counted.total_tokens == response.usage_metadata.prompt_token_count > 0


def test_openai_chat_on_an_image_model_answers_text(srv):
    from openai import OpenAI
    client = OpenAI(api_key=srv.api_key, base_url=srv.base_url + "/v1beta/openai/", max_retries=0)
    completion = client.chat.completions.create(model=FLASH_IMAGE,
                                                messages=[{"role": "user", "content": "Describe a lighthouse"}])
    assert completion.choices[0].message.content
    # A chat completion carries no picture, and none is painted or billed.
    assert completion.usage.completion_tokens < 1290


def test_a_diffusers_pipeline_paints_for_an_image_output_model(tmp_path):
    import tiny_models
    from conftest import start_server

    from pollux.images.painter import paint

    pipeline = tiny_models.build_tiny_sd(tiny_models.models_root())
    # The tiny pipeline renders 64 px a side (max_side), scaled to Gemini's size: a CPU can afford it.
    config = f"""
[models."{FLASH_IMAGE}"]
base = "gemini-2.5-flash"
output_modalities = ["TEXT", "IMAGE"]
thinking = false
engine = "diffusers"
engine_options = {{ source = "{pipeline}", steps = 2, max_side = 64 }}
"""
    with start_server(tmp_path / "data", config=config) as server:
        client = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))
        config_ = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"], seed=11,
                                              image_config=types.ImageConfig(aspect_ratio="16:9"))
        response = client.models.generate_content(model=FLASH_IMAGE, contents="a red square", config=config_)
        picture = next(p for p in response.parts if p.inline_data)
        assert png(picture).size == (1344, 768)
        assert picture.inline_data.data != paint(FLASH_IMAGE, "a red square", 0, 1344, 768, 11)  # not the painter
        assert response.text  # the built-in model writes the text beside the pipeline's picture
        again = client.models.generate_content(model=FLASH_IMAGE, contents="a red square", config=config_)
        assert next(p for p in again.parts if p.inline_data).inline_data.data == picture.inline_data.data
        assert "loading image pipeline" in server.log()
        # Text models on the same server are untouched.
        assert client.models.generate_content(model="gemini-2.5-flash", contents="hello").text


def test_wire_shape_of_a_picture_part(srv):
    r = httpx.post(f"{srv.base_url}/v1beta/models/{FLASH_IMAGE}:streamGenerateContent?alt=sse", timeout=60,
                   headers={"x-goog-api-key": srv.api_key},
                   json={"contents": [{"role": "user", "parts": [{"text": "A kite"}]}],
                         "generationConfig": {"responseModalities": ["IMAGE"]}})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 1  # the picture and the finish in one chunk
    candidate = events[0]["candidates"][0]
    assert candidate["finishReason"] == "STOP" and candidate["content"]["role"] == "model"
    assert events[0]["usageMetadata"]["candidatesTokensDetails"] == [{"modality": "IMAGE", "tokenCount": 1290}]
