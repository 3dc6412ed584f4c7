"""What a recorded request keeps of images and documents: type, media type, size and an image's dimensions, never the data."""
from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from explainer.inspect.record import MAX_STORED_BYTES, summarise


@pytest.mark.parametrize("fmt, media", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")])
def test_an_image_is_recorded_by_its_header_not_its_data(fmt, media):
    buf = io.BytesIO()
    Image.new("RGB", (37, 21), (200, 30, 30)).save(buf, fmt)
    data = base64.b64encode(buf.getvalue()).decode()
    body = {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}},
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}]},
        {"type": "text", "text": "What is this?"}]}]}
    stored, notes = summarise(body)
    for source in (stored["messages"][0]["content"][0]["source"], stored["messages"][0]["content"][1]["content"][0]["source"]):
        assert source == {"type": "base64", "media_type": media, "bytes": len(buf.getvalue()), "width": 37, "height": 21, "data": "(not recorded)"}
    assert data not in json.dumps(stored) and stored["messages"][0]["content"][2]["text"] == "What is this?"
    assert notes and "2 inline image(s)" in notes[0]


def test_a_document_and_a_url_image_and_an_oversize_body():
    pdf = base64.b64encode(b"%PDF-1.7 " + b"x" * 1000).decode()
    stored, _ = summarise({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]})
    doc, img = stored["messages"][0]["content"]
    assert doc["source"] == {"type": "base64", "media_type": "application/pdf", "bytes": 1009, "data": "(not recorded)"}
    assert img["source"] == {"type": "url", "url": "https://example.com/a.png"}
    big, notes = summarise({"messages": [{"role": "user", "content": "é" * MAX_STORED_BYTES}]})
    assert set(big) == {"truncated_json"} and len(big["truncated_json"].encode()) <= MAX_STORED_BYTES
    assert "first 1,048,576 bytes" in notes[-1]
