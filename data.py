"""Dataset factories, as in the original: ``get_training_set``, ``get_eval_set``, ``get_test_set``.

Which dataset is built for training/evaluation:

* ``<data_dir>/<file_list>`` exists -> ``DatasetFromFolder`` (Vimeo-90K septuplets, or a frame list with
  ``other_dataset``), exactly as the original;
* otherwise, when ``data_dir`` is a video file, a frame folder, or a folder holding videos and/or frame folders ->
  ``VideoFolderDataset`` (train on your own footage, no conversion);
* otherwise a ``DataError`` naming the missing list file.
"""

import os
from typing import Callable, Optional

from dataset import (
    DataError,
    DatasetFromFolder,
    DatasetFromFolderTest,
    VideoFolderDataset,
    find_video_sources,
    to_tensor,
)


def transform() -> Callable:
    """The original's ``Compose([ToTensor()])``: RGB uint8 -> float32 [0, 1] CxHxW."""
    return to_tensor


def uses_video_folder(data_dir: str, file_list: str) -> bool:
    """True when ``data_dir`` has no ``file_list`` but holds videos or frame folders (or is one)."""
    if os.path.isfile(os.path.join(data_dir, file_list)):
        return False
    return bool(find_video_sources(data_dir))


def _train_like(data_dir, nFrames, upscale_factor, data_augmentation, file_list, other_dataset, patch_size,
                future_frame, training, degradation, flow_cache, flow_threads):
    if not os.path.exists(data_dir):
        raise DataError(f"data directory not found: {data_dir}")
    if uses_video_folder(data_dir, file_list):
        return VideoFolderDataset(data_dir, nFrames, upscale_factor, data_augmentation, patch_size, future_frame,
                                  transform=transform(), degradation=degradation, flow_cache=flow_cache,
                                  flow_threads=flow_threads, training=training)
    return DatasetFromFolder(data_dir, nFrames, upscale_factor, data_augmentation, file_list, other_dataset,
                             patch_size, future_frame, transform=transform(), degradation=degradation,
                             flow_cache=flow_cache, flow_threads=flow_threads)


def get_training_set(data_dir: str, nFrames: int, upscale_factor: int, data_augmentation: bool, file_list: str,
                     other_dataset: bool, patch_size: int, future_frame: bool, degradation: str = "pil",
                     flow_cache: Optional[str] = None, flow_threads: int = 0):
    """Training dataset (random LR patches of ``patch_size`` with augmentation)."""
    return _train_like(data_dir, nFrames, upscale_factor, data_augmentation, file_list, other_dataset, patch_size,
                       future_frame, True, degradation, flow_cache, flow_threads)


def get_eval_set(data_dir: str, nFrames: int, upscale_factor: int, data_augmentation: bool, file_list: str,
                 other_dataset: bool, patch_size: int, future_frame: bool, degradation: str = "pil",
                 flow_cache: Optional[str] = None, flow_threads: int = 0):
    """Evaluation dataset; like the original it is built exactly as the training set."""
    return _train_like(data_dir, nFrames, upscale_factor, data_augmentation, file_list, other_dataset, patch_size,
                       future_frame, True, degradation, flow_cache, flow_threads)


def get_test_set(data_dir: str, nFrames: int, upscale_factor: int, file_list: str, other_dataset: bool,
                 future_frame: bool, upscale_only: bool = False, degradation: str = "pil",
                 flow_cache: Optional[str] = None, flow_threads: int = 0):
    """Test dataset: whole frames from a frame list, no augmentation (``upscale_only``: no downscaling)."""
    return DatasetFromFolderTest(data_dir, nFrames, upscale_factor, file_list, other_dataset, future_frame,
                                 transform=transform(), upscale_only=upscale_only, degradation=degradation,
                                 flow_cache=flow_cache, flow_threads=flow_threads)
