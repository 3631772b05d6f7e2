"""Preference data: the :class:`Record` model, formats, loading, pairs, validation, stats.

The names most callers need are re-exported here::

    from mmrlhf.data import load_records, save_records, derive_pairs, load_image
"""

from mmrlhf.data.io import embed_images, iter_records, load_records, save_records
from mmrlhf.data.media import MediaError, load_image, sample_video_frames
from mmrlhf.data.pairs import Pair, derive_pairs, pairs_to_rows, rows_to_pairs
from mmrlhf.data.problems import DataError, LoadReport
from mmrlhf.data.record import (
    Facts,
    ImageRef,
    Preference,
    Ranking,
    Record,
    RecordError,
    Response,
    Score,
    Turn,
    VideoRef,
)

__all__ = [
    "DataError",
    "Facts",
    "ImageRef",
    "LoadReport",
    "MediaError",
    "Pair",
    "Preference",
    "Ranking",
    "Record",
    "RecordError",
    "Response",
    "Score",
    "Turn",
    "VideoRef",
    "derive_pairs",
    "embed_images",
    "iter_records",
    "load_image",
    "load_records",
    "pairs_to_rows",
    "rows_to_pairs",
    "sample_video_frames",
    "save_records",
]
