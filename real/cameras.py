"""OpenCV cameras by device index, file path or stream URL, read by a background thread.

`OpenCVCamera` keeps only the freshest frame: a reader thread pulls frames as fast as the source gives
them (so no stale frames queue up in OpenCV's or the network's buffers) and `OpenCVCamera.read_latest`
returns the newest one without waiting, or raises:

- `StaleFrameError` when the newest frame is older than ``max_age_s`` (a hung camera, a stalled stream,
  a busy machine); a device or stream that stops delivering is reopened in the background meanwhile;
- `CameraClosedError` when the camera was disconnected, or its source ended (a file reaches its end,
  a device or stream cannot be reopened within ``open_timeout_s``).

Frames are RGB uint8 ``[H, W, 3]`` (OpenCV's BGR converted), stamped with ``time.monotonic()`` when
they were read from the source.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import numpy as np

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "udp", "tcp")
REOPEN_BACKOFF_S = 0.2


class CameraError(RuntimeError):
    """A camera that cannot give a usable frame."""


class StaleFrameError(CameraError):
    """The newest frame is older than the camera's ``max_age_s`` (or there is none yet)."""


class CameraClosedError(CameraError):
    """The camera is not connected, or its source ended or is gone."""


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    Attributes:
        image: uint8 ``[H, W, 3]``, RGB.
        timestamp: ``time.monotonic()`` when the frame was read from the source.
        index: frames read since `OpenCVCamera.connect` (0 for the first).

    """

    image: np.ndarray
    timestamp: float
    index: int


def parse_source(source: int | str | Path) -> int | str:
    """Validate a camera source: a device index (int or digits), a stream URL or an existing file.

    Returns:
        The device index as an int, or the URL / path as a string.

    Raises:
        ValueError: a negative index, a URL with an unsupported scheme or no host, or a missing file.

    """
    if isinstance(source, bool):
        raise ValueError(f"camera source must be a device index, a file path or a URL, got {source!r}")
    if isinstance(source, int):
        if source < 0:
            raise ValueError(f"camera device index must be >= 0, got {source}")
        return source
    text = str(source).strip()
    if text.isdigit():
        return int(text)
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in STREAM_SCHEMES or not parts.hostname:
            raise ValueError(
                f"camera URL {text!r} must have a host and one of the schemes {', '.join(STREAM_SCHEMES)}"
            )
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(
            f"camera source {text!r} is neither a device index, a stream URL ({'/'.join(STREAM_SCHEMES)}) "
            "nor an existing video file"
        )
    return str(path)


class OpenCVCamera:
    """One OpenCV camera whose freshest frame is always at hand (see the module docstring).

    Use it as a context manager or call `connect` and `disconnect`.
    """

    def __init__(
        self,
        source: int | str | Path,
        name: str = "camera",
        max_age_s: float = 0.5,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.0,
    ) -> None:
        """Describe a camera; nothing is opened until `connect`.

        Args:
            source: device index, stream URL or video file (`parse_source`).
            name: used in messages and logs.
            max_age_s: `read_latest` raises `StaleFrameError` for frames older than this.
            open_timeout_s: longest wait for the source to open and give its first frame.
            read_timeout_s: a stream that gives no frame for this long is reopened.

        Raises:
            ValueError: an invalid source or a non-positive duration.

        """
        self.source = parse_source(source)
        for label, value in (
            ("max_age_s", max_age_s),
            ("open_timeout_s", open_timeout_s),
            ("read_timeout_s", read_timeout_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"camera {name}: {label} must be > 0, got {value}")
        self.name = name
        self.max_age_s = max_age_s
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reopens = 0
        self._is_file = isinstance(self.source, str) and "://" not in self.source
        self._lock = threading.Lock()
        self._frame_ready = threading.Event()
        self._stop = threading.Event()
        self._latest: Frame | None = None
        self._closed_reason: str | None = "not connected"
        self._thread: threading.Thread | None = None

    @property
    def is_connected(self) -> bool:
        """Whether the reader runs and the source has not ended."""
        return self._thread is not None and self._closed_reason is None

    def connect(self) -> None:
        """Open the source and start the reader; return once the first frame arrived.

        Raises:
            CameraError: the source did not open or gave no frame within ``open_timeout_s``.
            RuntimeError: already connected.

        """
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name} is already connected")
        capture = self._open()
        if capture is None:
            raise CameraError(f"camera {self.name}: could not open {self.source!r}")
        self._stop.clear()
        self._frame_ready.clear()
        self._latest, self._closed_reason = None, None
        self._thread = threading.Thread(target=self._read_loop, args=(capture,), name=f"camera-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        if not self._frame_ready.wait(self.open_timeout_s):
            reason = self._closed_reason
            self.disconnect()
            raise CameraError(
                f"camera {self.name}: no frame from {self.source!r} within {self.open_timeout_s} s"
                + (f" ({reason})" if reason else "")
            )

    def read_latest(self) -> Frame:
        """The newest frame, without waiting.

        Raises:
            CameraClosedError: not connected, or the source ended.
            StaleFrameError: the newest frame is older than ``max_age_s``.

        """
        with self._lock:
            frame, reason = self._latest, self._closed_reason
        if reason is not None:
            raise CameraClosedError(f"camera {self.name} is closed: {reason}")
        if frame is None:
            raise StaleFrameError(f"camera {self.name} has no frame yet")
        age = time.monotonic() - frame.timestamp
        if age > self.max_age_s:
            raise StaleFrameError(
                f"camera {self.name}: newest frame is {age * 1000:.0f} ms old "
                f"(max {self.max_age_s * 1000:.0f} ms; source {self.source!r})"
            )
        return frame

    def disconnect(self) -> None:
        """Stop the reader and release the source (idempotent)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(self.read_timeout_s + self.open_timeout_s)
            if thread.is_alive():
                logger.warning("camera %s: the reader did not stop (a blocked read); leaving it", self.name)
        with self._lock:
            self._closed_reason = "disconnected"

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disconnect()

    def _open(self) -> Any:
        """A `cv2.VideoCapture` of the source that is open, or None."""
        import cv2

        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout_s * 1000),
        ]
        if isinstance(self.source, int):
            capture = cv2.VideoCapture(self.source, cv2.CAP_ANY)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        elif self._is_file:
            capture = cv2.VideoCapture(self.source, cv2.CAP_ANY)
        else:
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, timeouts)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _read_loop(self, capture: Any) -> None:
        import cv2

        # A file plays at its own frame rate; devices and streams are read as fast as they deliver.
        period = 1.0 / (capture.get(cv2.CAP_PROP_FPS) or 30.0) if self._is_file else 0.0
        index, reopen_deadline = 0, None
        try:
            while not self._stop.is_set():
                if capture is None:
                    if reopen_deadline is None:
                        reopen_deadline = time.monotonic() + self.open_timeout_s
                    if time.monotonic() > reopen_deadline:
                        self._close(f"{self.source!r} could not be reopened within {self.open_timeout_s} s")
                        return
                    if self._stop.wait(REOPEN_BACKOFF_S):
                        return
                    capture = self._open()
                    continue
                ok, bgr = capture.read()
                if not ok:
                    capture.release()
                    capture = None
                    if self._is_file:
                        self._close(f"end of file {self.source!r}")
                        return
                    self.reopens += 1
                    logger.warning("camera %s: %r stopped delivering; reopening", self.name, self.source)
                    continue
                reopen_deadline = None
                frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic(), index)
                with self._lock:
                    self._latest = frame
                self._frame_ready.set()
                index += 1
                if period:
                    self._stop.wait(period)
        finally:
            if capture is not None:
                capture.release()

    def _close(self, reason: str) -> None:
        logger.error("camera %s closed: %s", self.name, reason)
        with self._lock:
            self._closed_reason = reason
