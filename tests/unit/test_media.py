"""pollux.media: MIME allowlist, validation and measurement of real media, broken inputs, and Gemini's token numbers.

Ground truth comes from somewhere other than the code under test wherever possible: the stdlib `wave` module, the
MP4 `mvhd` box and PNG/JPEG headers parsed here, PDF objects counted in the raw bytes, or media built in the test
with a known length. The sample files (story.pdf, dog.jpg, animal.mp4, ...) are built by tests/media.py, whose
constants say what each was built to be.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import struct
import sys
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pollux.media import (MIME_ALLOWLIST, MediaError, MediaInfo, PdfDocument, audio_tokens, image_tokens, inspect,
                          inspect_bytes, is_supported, modality_of, pdf_page_tokens, sample_frames, video_frames,
                          video_tokens)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import media  # noqa: E402  (tests/media.py: the sample files, built here)
from media import sample  # noqa: E402


# Independent parsers for ground truth ------------------------------------------------------------------------------
def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise AssertionError("no SOF marker")


def mp4_duration(data: bytes) -> float:
    """Seconds from the movie header box ('mvhd'): version, flags, times, timescale, duration."""
    i = data.index(b"mvhd") + 4
    if data[i] == 1:
        timescale, duration = struct.unpack(">IQ", data[i + 20:i + 32])
    else:
        timescale, duration = struct.unpack(">II", data[i + 12:i + 20])
    return duration / timescale


def wav_bytes(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * channels * round(seconds * rate))
    return buf.getvalue()


def float_wav_bytes(frames: int, rate: int) -> bytes:
    """IEEE-float WAV (format tag 3), which the stdlib `wave` module of Python 3.11 refuses: FFmpeg must take over."""
    data = struct.pack(f"<{frames}f", *([0.25] * frames))
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# A real RC4-encrypted PDF (standard security handler, revision 2), built by hand: pypdfium2 cannot save encrypted.
_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: str, text: str = "Hello secret") -> bytes:
    def pad(pw: str) -> bytes:
        return (pw.encode() + _PAD)[:32]

    doc_id, perms = b"0123456789abcdef", -4
    owner = _rc4(hashlib.md5(pad("owner")).digest()[:5], pad(user_password))                       # Algorithm 3
    key = hashlib.md5(pad(user_password) + owner + perms.to_bytes(4, "little", signed=True) + doc_id).digest()[:5]
    user = _rc4(key, _PAD)                                                                          # Algorithm 4
    object_key = hashlib.md5(key + (4).to_bytes(3, "little") + (0).to_bytes(2, "little")).digest()[:10]
    content = _rc4(object_key, f"BT /F1 24 Tf 20 100 Td ({text}) Tj ET".encode())
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R "
                b"/Resources << /Font << /F1 5 0 R >> >> >>"),
               b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (owner.hex().encode(),
                                                                             user.hex().encode(), perms)]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % off for off in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 6 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, doc_id.hex().encode(), doc_id.hex().encode(), xref))
    return out.getvalue()


def blank_pdf(pages: int) -> bytes:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(100, 100)
    buf = io.BytesIO()
    doc.save(buf)
    doc.close()
    return buf.getvalue()


def random_bytes(n: int, seed: int = 1234) -> bytes:
    return random.Random(seed).randbytes(n)


# MIME types --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mime", ["image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "audio/wav",
                                  "audio/x-wav", "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac", "audio/ogg",
                                  "audio/flac", "audio/mp4", "video/mp4", "video/mpeg", "video/mov",
                                  "video/quicktime", "video/avi", "video/x-msvideo", "video/x-flv", "video/mpg",
                                  "video/mpegps", "video/webm", "video/wmv", "video/x-ms-wmv", "video/3gpp",
                                  "application/pdf", "text/plain", "text/markdown", "text/html", "text/csv",
                                  "text/xml", "application/json", "application/xml", "text/x-python"])
def test_allowlist_has_gemini_types(mime: str) -> None:
    assert mime in MIME_ALLOWLIST
    assert is_supported(mime)


def test_is_supported_normalises_and_rejects() -> None:
    assert is_supported("Text/Plain; charset=utf-8")
    assert is_supported("IMAGE/PNG")
    assert is_supported("text/x-rust")  # any text/*
    assert not is_supported("image/gif")
    assert not is_supported("application/zip")
    assert not is_supported("application/octet-stream")
    assert not is_supported("")
    assert all(m == m.lower() and ";" not in m for m in MIME_ALLOWLIST)
    assert modality_of("video/quicktime") == "VIDEO" and modality_of("audio/mp4") == "AUDIO"
    assert modality_of("application/pdf") == "DOCUMENT" and modality_of("application/json") == "TEXT"


def test_unsupported_mime_is_refused() -> None:
    with pytest.raises(MediaError, match="Unsupported MIME type: 'application/zip'"):
        inspect(sample("dog.jpg"), "application/zip")


def test_media_error_is_value_error_and_info_is_frozen() -> None:
    assert issubclass(MediaError, ValueError)
    info = inspect(sample("google.png"), "image/png")
    with pytest.raises(AttributeError):
        info.width = 1  # type: ignore[misc]


def test_empty_file_is_refused() -> None:
    assert sample("a-man-and-a-dog.png").stat().st_size == 0
    with pytest.raises(MediaError, match="empty"):
        inspect(sample("a-man-and-a-dog.png"), "image/png")


# Images ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mime,header_size", [("google.png", "image/png", png_size),
                                                   ("bridge1.png", "image/png", png_size),
                                                   ("dog.jpg", "image/jpeg", jpeg_size),
                                                   ("man.jpg", "image/jpeg", jpeg_size)])
def test_image_sizes_match_headers(name: str, mime: str, header_size) -> None:
    data = sample(name).read_bytes()
    expected = header_size(data)
    info = inspect(sample(name), mime)
    assert info == MediaInfo(mime, "IMAGE", len(data), width=expected[0], height=expected[1])
    assert inspect_bytes(data, mime + "; foo=bar") == info


def test_webp_and_heic() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buf, "WEBP")
    assert (inspect_bytes(buf.getvalue(), "image/webp").width, inspect_bytes(buf.getvalue(), "image/webp").height) \
        == (64, 48)
    import pillow_heif

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(buf, "HEIF")
    info = inspect_bytes(buf.getvalue(), "image/heic")
    assert (info.modality, info.width, info.height) == ("IMAGE", 40, 30)


def test_random_bytes_as_png() -> None:
    with pytest.raises(MediaError, match="could not be decoded as image/png"):
        inspect_bytes(random_bytes(4096), "image/png")


@pytest.mark.parametrize("name,mime", [("google.png", "image/png"), ("dog.jpg", "image/jpeg")])
def test_truncated_image(name: str, mime: str) -> None:
    data = sample(name).read_bytes()
    with pytest.raises(MediaError, match="could not be decoded"):
        inspect_bytes(data[: len(data) // 2], mime)


def test_pdf_declared_as_image() -> None:
    with pytest.raises(MediaError, match="could not be decoded as image/png"):
        inspect(sample("story.pdf"), "image/png")


def test_image_over_pixel_bound() -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(buf, "PNG")  # 60 MP, a few KB compressed
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(MediaError, match=r"10000x6000 pixels .*limit is 50 megapixels.*decompression bomb"):
        inspect_bytes(buf.getvalue(), "image/png")


# PDFs --------------------------------------------------------------------------------------------------------------
def test_story_pdf() -> None:
    raw = sample("story.pdf").read_bytes()
    pages_in_raw = len(re.findall(rb"/Type\s*/Page(?![a-z])", raw))
    info = inspect(sample("story.pdf"), "application/pdf")
    assert info == MediaInfo("application/pdf", "DOCUMENT", len(raw), pages=pages_in_raw)
    assert info.pages == 1
    with PdfDocument(raw) as doc:
        assert doc.page_count == 1
        text = doc.page_text(0)
    # The document's title (stored uncompressed in its Info dictionary) is the first line of its text.
    assert b"/Title (The Whispering Woods" in raw
    assert text.startswith("The Whispering Woods\nIn the heart of Eldergrove")
    assert "Elara" in text and "\r" not in text
    assert len(text.split()) > 150


def test_story_pdf_render() -> None:
    with PdfDocument(sample("story.pdf")) as doc:
        image = doc.render_page(0)
        small = doc.render_page(0, max_side=200)
    assert image.mode == "RGB"
    assert image.size == (594, 768)  # US Letter, 612×792 pt, scaled to 768 on the long side
    assert max(small.size) == 200 and abs(small.size[0] / small.size[1] - 612 / 792) < 0.01
    lo, hi = image.convert("L").getextrema()
    assert hi > 240 and lo < 100  # white paper with dark text on it


def test_pdf_page_index_and_close() -> None:
    doc = PdfDocument(sample("story.pdf"))
    with pytest.raises(IndexError):
        doc.page_text(1)
    doc.close()
    with pytest.raises(ValueError):
        doc.page_text(0)


def test_truncated_pdf() -> None:
    raw = sample("story.pdf").read_bytes()
    with pytest.raises(MediaError, match="could not be read as a PDF"):
        inspect_bytes(raw[: len(raw) // 2], "application/pdf")
    with pytest.raises(MediaError, match="could not be read as a PDF"):
        PdfDocument(raw[:100])


def test_random_bytes_as_pdf() -> None:
    with pytest.raises(MediaError, match="could not be read as a PDF"):
        inspect_bytes(random_bytes(5000), "application/pdf")


def test_encrypted_pdf() -> None:
    # The same construction with an empty user password opens and decrypts, so the file really is encrypted ...
    plain_open = encrypted_pdf("")
    assert b"Hello secret" not in plain_open
    with PdfDocument(plain_open) as doc:
        assert doc.page_text(0) == "Hello secret"
    # ... and with a user password it cannot be read without one.
    locked = encrypted_pdf("secret")
    with pytest.raises(MediaError, match="password-protected"):
        inspect_bytes(locked, "application/pdf")
    with pytest.raises(MediaError, match="password-protected"):
        PdfDocument(locked)


def test_pdf_page_limit() -> None:
    assert inspect_bytes(blank_pdf(1000), "application/pdf").pages == 1000
    with pytest.raises(MediaError, match=r"^The document has 1001 pages; the limit is 1000\.$"):
        inspect_bytes(blank_pdf(1001), "application/pdf")


def test_pdf_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    path.write_bytes(blank_pdf(1) + b"%" + b" " * (50 * 1024 * 1024))
    with pytest.raises(MediaError, match=r"The document is 50\.0 MB; the limit is 50 MB"):
        inspect(path, "application/pdf")


def test_pdf_thread_safety() -> None:
    raw = sample("story.pdf").read_bytes()
    with PdfDocument(raw) as doc:
        expected_text, expected_image = doc.page_text(0), doc.render_page(0, 256).tobytes()
    docs = [PdfDocument(raw) for _ in range(4)]
    seen_threads: set[int] = set()

    def work(i: int) -> tuple[str, bytes]:
        seen_threads.add(threading.get_ident())
        doc = docs[i % len(docs)]
        return doc.page_text(0), doc.render_page(0, 256).tobytes()

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(48)))
    finally:
        for doc in docs:
            doc.close()
    assert len(seen_threads) > 1
    assert all(r == (expected_text, expected_image) for r in results)


# Audio -------------------------------------------------------------------------------------------------------------
def test_wav_duration() -> None:
    with wave.open(str(sample("voice_sample.wav"))) as w:
        expected = w.getnframes() / w.getframerate()
    info = inspect(sample("voice_sample.wav"), "audio/wav")
    assert info.modality == "AUDIO" and info.width is None
    assert info.duration == pytest.approx(expected, abs=1e-6)
    assert info.duration == media.WAV_SECONDS  # 49,500 frames at 24 kHz: 2.0625 s


def test_truncated_wav_counts_real_frames() -> None:
    data = wav_bytes(1.0)  # 8000 frames of 2 bytes after a 44-byte header
    assert inspect_bytes(data, "audio/x-wav").duration == pytest.approx(1.0)
    assert inspect_bytes(data[: 44 + 8000], "audio/wav").duration == pytest.approx(0.5)


def test_float_wav_falls_back_to_ffmpeg() -> None:
    data = float_wav_bytes(12_000, 8000)
    with pytest.raises(wave.Error), wave.open(io.BytesIO(data)):
        pass
    assert inspect_bytes(data, "audio/wav").duration == pytest.approx(1.5, abs=1e-3)


def test_m4a_duration() -> None:
    data = sample("pixel.m4a").read_bytes()
    info = inspect(sample("pixel.m4a"), "audio/mp4")
    # mvhd gives the edited length; FFmpeg may report the audio track's own (AAC priming included).
    assert info.duration == pytest.approx(mp4_duration(data), abs=0.1)
    assert info.duration == pytest.approx(media.M4A_SECONDS, abs=0.1)  # built as 4 s of AAC


def test_random_bytes_as_audio() -> None:
    for mime in ("audio/wav", "audio/mp3", "audio/ogg"):
        with pytest.raises(MediaError, match=f"could not be decoded as {mime}"):
            inspect_bytes(random_bytes(8000, seed=7), mime)


# Video -------------------------------------------------------------------------------------------------------------
def test_mp4_video() -> None:
    data = sample("animal.mp4").read_bytes()
    info = inspect(sample("animal.mp4"), "video/mp4")
    assert (info.modality, info.width, info.height) == ("VIDEO", 1280, 720)
    assert info.duration == pytest.approx(mp4_duration(data), abs=0.05)
    assert info.duration == pytest.approx(media.VIDEO_SECONDS, abs=0.01)  # 66 frames at 24 fps: 2.75 s
    assert inspect_bytes(data, "video/mp4") == info


def test_random_bytes_as_mp4() -> None:
    with pytest.raises(MediaError, match="could not be decoded as video/mp4"):
        inspect_bytes(random_bytes(100_000), "video/mp4")


def test_truncated_mp4() -> None:
    data = sample("animal.mp4").read_bytes()
    with pytest.raises(MediaError, match="could not be decoded as video/mp4"):
        inspect_bytes(data[: len(data) // 2], "video/mp4")  # the 'moov' box, written last, is cut off


def test_audio_only_file_as_video() -> None:
    with pytest.raises(MediaError, match="no video stream"):
        inspect(sample("pixel.m4a"), "video/mp4")


def test_image_as_video() -> None:
    # FFmpeg alone would take a JPEG as a one-frame video; the demuxer allowlist is what refuses it.
    with pytest.raises(MediaError, match="could not be decoded as video/mp4"):
        inspect(sample("dog.jpg"), "video/mp4")


def _encode(fmt: str, codec: str, *, video: bool, seconds: int = 2) -> bytes:
    """A clip of known length, encoded by FFmpeg (PyAV) in memory: 10 fps video, or 16 kHz mono silence."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        if video:
            rate = 25 if codec == "mpeg2video" else 10
            stream = out.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(seconds * rate):
                frame = av.VideoFrame(64, 48, "yuv420p")
                for plane in frame.planes:
                    plane.update(bytes([i * 7 % 256]) * plane.buffer_size)
                frame.pts = i
                out.mux(stream.encode(frame))
        else:
            rate = 48000 if codec == "libopus" else 16000
            stream = out.add_stream(codec, rate=rate)
            stream.layout = "mono"
            size, pts = stream.codec_context.frame_size or 1024, 0
            while pts < seconds * rate:
                n = min(size, seconds * rate - pts)
                frame = av.AudioFrame(format=stream.format.name, layout="mono", samples=n)
                frame.sample_rate, frame.pts = rate, pts
                for plane in frame.planes:
                    plane.update(bytes(plane.buffer_size))
                out.mux(stream.encode(frame))
                pts += n
        out.mux(stream.encode())
    return buf.getvalue()


@pytest.mark.parametrize("fmt,codec,mime", [("webm", "libvpx", "video/webm"), ("avi", "mpeg4", "video/x-msvideo"),
                                            ("flv", "flv", "video/x-flv"), ("vob", "mpeg2video", "video/mpeg"),
                                            ("asf", "wmv2", "video/x-ms-wmv"), ("mov", "mpeg4", "video/quicktime")])
def test_video_containers(fmt: str, codec: str, mime: str) -> None:
    info = inspect_bytes(_encode(fmt, codec, video=True), mime)
    assert (info.modality, info.width, info.height) == ("VIDEO", 64, 48)
    assert info.duration == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("fmt,codec,mime,tolerance", [("mp3", "libmp3lame", "audio/mp3", 0.05),
                                                      ("flac", "flac", "audio/flac", 0.01),
                                                      ("ogg", "libopus", "audio/ogg", 0.05),
                                                      ("aiff", "pcm_s16be", "audio/aiff", 0.01),
                                                      ("adts", "aac", "audio/aac", 0.15)])  # + encoder priming
def test_audio_containers(fmt: str, codec: str, mime: str, tolerance: float) -> None:
    info = inspect_bytes(_encode(fmt, codec, video=False), mime)
    assert info.modality == "AUDIO"
    assert info.duration == pytest.approx(2.0, abs=tolerance)


def test_sample_frames() -> None:
    frames = sample_frames(sample("animal.mp4"))  # 2.75 s at 1 fps: t = 0, 1, 2
    assert len(frames) == 3
    assert all(f.mode == "RGB" and f.size == (768, 432) for f in frames)
    assert frames[0].tobytes() != frames[2].tobytes()
    assert len(sample_frames(sample("animal.mp4").read_bytes(), fps=10, start=1.0, end=2.0)) == 10
    spread = sample_frames(sample("animal.mp4"), fps=24, max_frames=5, max_side=100)
    assert len(spread) == 5 and max(spread[0].size) == 100
    with pytest.raises(MediaError):
        sample_frames(random_bytes(50_000))


# Text --------------------------------------------------------------------------------------------------------------
def test_text() -> None:
    info = inspect(sample("story.txt"), "text/plain; charset=utf-8")
    assert info == MediaInfo("text/plain", "TEXT", sample("story.txt").stat().st_size)
    assert inspect_bytes(b"ok \xff\xfe", "application/json").modality == "TEXT"  # bad UTF-8 is replaced, not refused
    assert inspect_bytes(b"fn main() {}", "text/x-rust").modality == "TEXT"


# Token accounting (reference/semantics.md §7) ---------------------------------------------------------------------
def test_image_tokens_gemini_2() -> None:
    assert image_tokens(384, 384, "gemini-2.5-flash") == 258
    assert image_tokens(100, 50, "gemini-2.0-flash") == 258
    assert image_tokens(960, 540, "gemini-2.5-flash") == 1548  # unit 360 → 3×2 tiles
    assert image_tokens(385, 385, "gemini-2.5-pro") == 4 * 258
    assert image_tokens(960, 540, "gemini-2.5-flash", "MEDIA_RESOLUTION_LOW") == 1548  # 2.x ignores it


def test_image_tokens_gemini_3() -> None:
    for model in ("gemini-3-pro-preview", "models/gemini-3-flash"):
        assert image_tokens(10, 10, model) == 1120
        assert image_tokens(4000, 3000, model, "MEDIA_RESOLUTION_UNSPECIFIED") == 1120
        assert image_tokens(960, 540, model, "MEDIA_RESOLUTION_LOW") == 280
        assert image_tokens(960, 540, model, "MEDIA_RESOLUTION_MEDIUM") == 560
        assert image_tokens(960, 540, model, "MEDIA_RESOLUTION_HIGH") == 1120
    with pytest.raises(ValueError):
        image_tokens(1, 1, "gemini-3-pro-preview", "LOW")


def test_pdf_page_tokens() -> None:
    assert pdf_page_tokens("gemini-2.5-flash") == 258
    assert pdf_page_tokens("gemini-2.5-flash", "MEDIA_RESOLUTION_HIGH") == 258
    assert pdf_page_tokens("gemini-3-pro-preview") == 560
    assert pdf_page_tokens("gemini-3-pro-preview", "MEDIA_RESOLUTION_LOW") == 280
    assert pdf_page_tokens("gemini-3-pro-preview", "MEDIA_RESOLUTION_MEDIUM") == 560
    assert pdf_page_tokens("gemini-3-pro-preview", "MEDIA_RESOLUTION_HIGH") == 1120


def test_audio_tokens() -> None:
    assert audio_tokens(60) == 1920
    assert audio_tokens(2.0) == 64  # exact, despite float rounding
    assert audio_tokens(0.1) == 4   # 3.2 rounds up
    assert audio_tokens(0) == 0
    with pytest.raises(ValueError):
        audio_tokens(-1)


def test_video_tokens() -> None:
    assert video_frames(0.2) == 1 and video_frames(2.75) == 3 and video_frames(10, fps=2) == 20
    assert video_tokens(10, "gemini-2.5-flash") == 10 * 258 + 320
    assert video_tokens(10, "gemini-2.5-flash", resolution="MEDIA_RESOLUTION_LOW") == 10 * 66 + 320
    assert video_tokens(10, "gemini-2.5-flash", fps=0.5) == 5 * 258 + 320
    assert video_tokens(10, "gemini-3-pro-preview") == 10 * 70 + 320
    assert video_tokens(10, "gemini-3-pro-preview", resolution="MEDIA_RESOLUTION_MEDIUM") == 10 * 70 + 320
    assert video_tokens(10, "gemini-3-pro-preview", resolution="MEDIA_RESOLUTION_HIGH") == 10 * 280 + 320
    assert video_tokens(0.5, "gemini-2.5-flash") == 258 + 16
    # animal.mp4, measured: 2.75 s (as built) → 3 frames + 32 · 2.75 = 88 audio tokens
    seconds = inspect(sample("animal.mp4"), "video/mp4").duration
    assert seconds == media.VIDEO_SECONDS
    assert video_tokens(seconds, "gemini-2.5-flash") == 3 * 258 + 88
    assert video_tokens(2.7508, "gemini-2.5-flash") == 3 * 258 + 89  # a fraction of an audio token rounds up
    with pytest.raises(ValueError):
        video_tokens(1, "gemini-2.5-flash", fps=0)
