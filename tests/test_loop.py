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


def test_streamed_rows_are_read_from_the_file_not_mapped(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "cache.npy", values)
    mapped = np.load(tmp_path / "cache.npy", mmap_mode="r")
    rows = np.arange(5, 30, 2)
    streamed = StreamedImages(mapped, rows)
    assert streamed._file is not None  # a whole memmap: preadv
    index = torch.tensor([4, 0, 12, 4])
    assert np.array_equal(streamed[index].numpy(), values[rows[[4, 0, 12, 4]]])
    view = StreamedImages(mapped[2:], rows - 2)  # a view: the file offset would be wrong, so index it
    assert view._file is None and np.array_equal(view[index].numpy(), values[rows[[4, 0, 12, 4]]])
    in_ram = StreamedImages(values, rows)
    assert in_ram._file is None and np.array_equal(in_ram[index].numpy(), values[rows[[4, 0, 12, 4]]])
