"""The training input path: in-memory and memory-map-streamed images give the same batches."""

import numpy as np
import torch

from mediscan.training.loop import StreamedImages, image_source


def test_streamed_images_match_in_memory_rows(tmp_path):
    data = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8,
                                     shape=(20, 1, 4, 4))
    data[:] = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    rows = np.array([3, 7, 11, 15])
    streamed = image_source(data, rows, torch.device("cpu"), ram_fraction=0.0)
    in_memory = image_source(data, rows, torch.device("cpu"))
    assert isinstance(streamed, StreamedImages) and torch.is_tensor(in_memory)
    index = torch.tensor([2, 0, 3])
    torch.testing.assert_close(streamed[index], in_memory[index])
    assert streamed[index][:, 0, 0, 0].tolist() == [11, 3, 15]
