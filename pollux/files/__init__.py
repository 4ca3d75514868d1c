"""The Files API: resumable, multipart and plain uploads (`uploads.py`), the file resources (`service.py`)."""
