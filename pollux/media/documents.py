"""PDFs through pypdfium2 (PDFium): page count, page text and page images, for models without native PDF input.

PDFium is not thread-safe: no two PDFium calls may run at the same time in one process, not even on different
documents. Callers use this from `asyncio.to_thread`, so every PDFium call here runs under `_PDFIUM_LOCK`, and pages,
text pages and bitmaps are closed explicitly inside it, rather than left to garbage-collector finalizers that would run
unlocked on whichever thread triggers a collection.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .errors import MediaError

if TYPE_CHECKING:
    from PIL import Image

# One lock for the whole process (see the module docstring). Re-entrant so helpers may nest.
_PDFIUM_LOCK = threading.RLock()

DEFAULT_MAX_SIDE = 768  # Gemini scales small pages to about 768×768; a size open vision models also handle well

_UNREADABLE = "The document could not be read as a PDF: it is damaged, truncated or not a PDF."


def _load(source: Path | str | bytes) -> Any:
    import pypdfium2 as pdfium
    from pypdfium2 import raw

    try:
        with _PDFIUM_LOCK:
            return pdfium.PdfDocument(bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else
                                      str(source))
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == raw.FPDF_ERR_PASSWORD:
            raise MediaError("The document is password-protected; upload a copy without a password.") from None
        if getattr(exc, "err_code", None) == raw.FPDF_ERR_SECURITY:
            raise MediaError("The document uses an unsupported encryption scheme; upload an unencrypted copy.") \
                from None
        raise MediaError(_UNREADABLE) from None
    except FileNotFoundError:
        raise
    except OSError:
        raise MediaError(_UNREADABLE) from None


class PdfDocument:
    """An open PDF. Use as a context manager (or call `close`) so PDFium's memory is freed under the lock.

    `source` is a path or the file's bytes. Raises MediaError when the data is not a readable PDF or needs a password.
    """

    def __init__(self, source: Path | str | bytes) -> None:
        self._doc: Any = _load(source)
        with _PDFIUM_LOCK:
            self._pages = len(self._doc)

    @property
    def page_count(self) -> int:
        return self._pages

    def _page(self, index: int) -> Any:
        import pypdfium2 as pdfium

        if self._doc is None:
            raise ValueError("The document is closed.")
        if not 0 <= index < self._pages:
            raise IndexError(f"page {index} out of range (the document has {self._pages} pages)")
        try:
            return self._doc[index]
        except pdfium.PdfiumError:
            # PDFium repairs a broken cross-reference table on open, so damage may only show once a page is parsed.
            raise MediaError(f"Page {index + 1} of the document could not be read: the PDF is damaged.") from None

    def load_page(self, index: int) -> None:
        """Parse one page and drop it: a cheap check that the page is readable."""
        with _PDFIUM_LOCK:
            self._page(index).close()

    def page_text(self, index: int) -> str:
        """The page's text layer in reading order, with '\\n' line ends (PDFium gives '\\r\\n'). Empty for scans."""
        with _PDFIUM_LOCK:
            page = self._page(index)
            try:
                textpage = page.get_textpage()
                try:
                    text: str = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def render_page(self, index: int, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
        """The page as an RGB image whose longest side is `max_side` pixels (aspect ratio kept; small pages grow)."""
        if max_side < 1:
            raise ValueError("max_side must be >= 1")
        with _PDFIUM_LOCK:
            page = self._page(index)
            try:
                width, height = page.get_size()  # points, i.e. pixels at scale 1; swapped below if /Rotate turns it
                scale = max_side / max(width, height, 1e-6)
                bitmap = page.render(scale=scale)
                try:
                    # to_pil() shares PDFium's buffer; convert() copies it out before the bitmap is freed.
                    image = bitmap.to_pil().convert("RGB")
                finally:
                    bitmap.close()
            finally:
                page.close()
        if max(image.size) > max_side:  # rounding, or a rotated page; never upscale here
            image.thumbnail((max_side, max_side))
        return image

    def close(self) -> None:
        if self._doc is not None:
            with _PDFIUM_LOCK:
                self._doc.close()
            self._doc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
