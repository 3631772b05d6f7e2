"""Media helpers: resolving, decoding with clear errors, uniform frame sampling."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from data_helpers import png_bytes

from mmrlhf.data.media import MediaError, load_image, sample_video_frames, uniform_indices
from mmrlhf.data.record import ImageRef, VideoRef


def test_load_image_from_path_and_bytes(media_root: Path) -> None:
    im = load_image(ImageRef(path="imgs/red.png"), media_root)
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (200, 30, 30)
    assert load_image(ImageRef(data=png_bytes((1, 2, 3)))).getpixel((1, 1)) == (1, 2, 3)
    assert load_image(str(media_root / "imgs/blue.png")).getpixel((0, 0)) == (30, 30, 200)


def test_load_image_errors_are_clear(media_root: Path) -> None:
    with pytest.raises(MediaError, match="image file not found: .*imgs/nope.png") as e:
        load_image(ImageRef(path="imgs/nope.png"), media_root)
    assert e.value.kind == "missing_media"
    with pytest.raises(MediaError, match="cannot decode image .*broken.png") as e:
        load_image(ImageRef(path="imgs/broken.png"), media_root)
    assert e.value.kind == "bad_media"


def test_uniform_indices() -> None:
    assert uniform_indices(12, 4) == [0, 3, 7, 11]
    assert uniform_indices(3, 10) == [0, 1, 2]
    assert uniform_indices(5, 1) == [0]
    assert uniform_indices(0, 4) == []


def test_frame_directory_as_video(media_root: Path) -> None:
    frames = sample_video_frames(VideoRef(path="clips/clip1", num_frames=4), media_root)
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 60, 140, 220]
    assert len(sample_video_frames("clips/clip1", media_root, num_frames=3)) == 3
    with pytest.raises(MediaError, match="video file not found"):
        sample_video_frames("clips/none.mp4", media_root)


@pytest.mark.skipif(importlib.util.find_spec("av") is not None, reason="PyAV is installed")
def test_video_file_without_pyav_names_the_extra(media_root: Path) -> None:
    (media_root / "clip.mp4").write_bytes(b"\x00" * 16)
    with pytest.raises(MediaError, match=r"pip install mmrlhf\[video\]"):
        sample_video_frames("clip.mp4", media_root)
