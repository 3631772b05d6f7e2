"""Images and videos referenced by records: resolving paths, decoding, sampling frames.

Paths in records are relative to a *media root* (the folder the dataset's images live under) or
absolute. ``media_root=None`` means the current directory; the loaders pass the data file's own
folder instead, which is where most datasets keep their media.

Every failure is a :class:`MediaError` whose ``kind`` says whether the file is missing
(``missing_media``) or there but unusable (``bad_media``), so that callers can report it as a
located data problem.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmrlhf.data.problems import BAD_MEDIA, MISSING_MEDIA
from mmrlhf.data.record import ImageRef, VideoRef

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class MediaError(ValueError):
    """An image or video that cannot be used; ``kind`` is ``missing_media`` or ``bad_media``."""

    def __init__(self, message: str, kind: str = BAD_MEDIA) -> None:
        self.kind = kind
        super().__init__(message)


def resolve_path(path: str | Path, media_root: str | Path | None = None) -> Path:
    """``path`` made absolute: kept when already absolute, else joined to ``media_root``."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return Path(media_root or ".") / p


def resolve_image(ref: ImageRef, media_root: str | Path | None = None) -> Path | None:
    """The file an image refers to, or None when the image is embedded bytes only."""
    return None if ref.path is None else resolve_path(ref.path, media_root)


def image_bytes(ref: ImageRef, media_root: str | Path | None = None) -> bytes:
    """The encoded bytes of an image: embedded ones win, else the file's content."""
    if ref.data is not None:
        return ref.data
    path = resolve_image(ref, media_root)
    if path is None or not path.is_file():
        raise MediaError(f"image file not found: {path}", MISSING_MEDIA)
    return path.read_bytes()


def _open(data: bytes, what: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"cannot decode image {what}: {e}", BAD_MEDIA) from None
    return im


def load_image(ref: ImageRef | str, media_root: str | Path | None = None) -> Image.Image:
    """Decode an image (embedded bytes, or the file at its path) as an RGB PIL image.

    Raises :class:`MediaError`: ``missing_media`` when the file does not exist, ``bad_media``
    when it cannot be decoded.
    """
    if isinstance(ref, str):
        ref = ImageRef(path=ref)
    what = "(embedded bytes)" if ref.data is not None else str(resolve_image(ref, media_root))
    return _open(image_bytes(ref, media_root), what).convert("RGB")


def check_image(ref: ImageRef, media_root: str | Path | None = None) -> None:
    """Raise :class:`MediaError` unless the image exists and decodes (cheaper than loading:
    only the header is parsed and the file is checked for truncation)."""
    data = image_bytes(ref, media_root)
    what = "(embedded bytes)" if ref.data is not None else str(resolve_image(ref, media_root))
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"cannot decode image {what}: {e}", BAD_MEDIA) from None


def frame_files(directory: Path) -> list[Path]:
    """The image files of a directory of extracted frames, in name order."""
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def check_video(ref: VideoRef, media_root: str | Path | None = None) -> None:
    """Raise :class:`MediaError` unless the video file (or frame directory) is there.

    Only existence is checked: decoding a whole clip to validate it would make validation as
    slow as training, and PyAV may not be installed.
    """
    path = resolve_path(ref.path, media_root)
    if path.is_dir():
        if not frame_files(path):
            raise MediaError(f"video frame directory has no image files: {path}", BAD_MEDIA)
    elif not path.is_file():
        raise MediaError(f"video file not found: {path}", MISSING_MEDIA)


def uniform_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included.

    Same rule as LLaVA-OneVision / LLaVA-Video (``np.linspace(0, total - 1, count)``), so frames
    match what MM-RLHF's models saw. Fewer frames than asked: each frame once.
    """
    if total <= 0:
        return []
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return [int(i * (total - 1) / (count - 1)) for i in range(count)]


def _frame_count(ref: VideoRef, duration_s: float | None) -> int:
    if ref.fps is not None and duration_s:
        return max(1, min(ref.max_frames, int(round(duration_s * ref.fps))))
    return min(ref.num_frames, ref.max_frames)


def sample_video_frames(
    video: VideoRef | str,
    media_root: str | Path | None = None,
    num_frames: int | None = None,
) -> list[Image.Image]:
    """Uniformly sampled RGB frames of a video file, or of a directory of frame images.

    ``num_frames`` overrides the reference's own setting. For a frame directory, ``fps`` cannot
    apply (the frame rate is unknown), so ``num_frames`` (capped by ``max_frames``) is used.
    Decoding a real video file needs PyAV: ``pip install mmrlhf[video]``.
    """
    ref = VideoRef(path=video) if isinstance(video, str) else video
    if num_frames is not None:
        ref = VideoRef(path=ref.path, num_frames=num_frames, fps=None, max_frames=ref.max_frames)
    check_video(ref, media_root)
    path = resolve_path(ref.path, media_root)
    if path.is_dir():
        files = frame_files(path)
        picked = uniform_indices(len(files), _frame_count(ref, None))
        return [load_image(ImageRef(path=str(files[i]))) for i in picked]
    try:
        import av  # type: ignore[import-not-found]
    except ImportError:
        raise MediaError(
            f"decoding video {path} needs PyAV, which is not installed: "
            "pip install mmrlhf[video] (or pass a directory of frame images)",
            BAD_MEDIA,
        ) from None
    try:
        # Two passes: the frame count in the header is often missing or wrong, so count first.
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base) if stream.duration else None
            total = sum(1 for _ in container.decode(stream))
        wanted = set(uniform_indices(total, _frame_count(ref, duration)))
        frames: list[Image.Image] = []
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i in wanted:
                    frames.append(frame.to_image().convert("RGB"))
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise MediaError(f"cannot decode video {path}: {e}", BAD_MEDIA) from None
    if not frames:
        raise MediaError(f"video has no frames: {path}", BAD_MEDIA)
    return frames
