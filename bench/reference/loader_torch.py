#!/usr/bin/env python3
"""bench/reference/loader_torch.py: the PyTorch side of bench_cpu_loader.

The usual PyTorch input pipeline over the same bytes: a Dataset whose __getitem__ returns one
uint8 image (H, W, 3) and mask (H, W), optionally turned by a random one of the 8 symmetries
of the square (np.rot90 and a left-right flip, as the Loader's augmentation), batched by a
DataLoader (batch 16, shuffled) with 1 or 2 worker processes. Prints images/s per setting.

  python bench/reference/loader_torch.py [--cache FILE] [--seconds 5]

--cache reads a unetcu cache file (data/cache.h: the header gives the block offsets) as numpy
memory maps, so both sides read the same file; without it, 2,000 random 128x128 images in
memory (as bench_cpu_loader without --data).
"""
import argparse
import json
import struct
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def open_cache(path):
    with open(path, "rb") as f:
        prefix = f.read(24)
        if prefix[:8] != b"UNETCUDS":
            raise SystemExit(f"{path}: not a unetcu cache file")
        (header_len,) = struct.unpack("<Q", prefix[16:24])
        header = json.loads(f.read(header_len))
    n, size = header["dataset"]["n"], header["size"]
    images = np.memmap(path, np.uint8, "r", header["images_offset"], (n, size, size, 3))
    masks = np.memmap(path, np.uint8, "r", header["masks_offset"], (n, size, size))
    return images, masks


class Pairs(Dataset):
    def __init__(self, images, masks, augment):
        self.images, self.masks, self.augment = images, masks, augment
        self.rng = np.random.default_rng(7)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image, mask = self.images[i], self.masks[i]
        if self.augment:
            t = int(self.rng.integers(8))
            if t & 4:
                image, mask = image[:, ::-1], mask[:, ::-1]
            image, mask = np.rot90(image, -(t & 3)), np.rot90(mask, -(t & 3))
        # np.array copies (into writable, contiguous memory), as the Loader copies into its slot.
        return torch.from_numpy(np.array(image)), torch.from_numpy(np.array(mask))


def images_per_second(dataset, workers, seconds):
    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=workers,
                        persistent_workers=True, prefetch_factor=4)
    seen, start = 0, None
    while True:
        for images, masks in loader:
            if start is None:  # the first batch pays for starting the workers
                start = time.perf_counter()
                continue
            seen += images.shape[0]
            if time.perf_counter() - start > seconds:
                return seen / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cache:
        images, masks = open_cache(args.cache)
        source = f"{len(images)} images from {args.cache}"
    else:
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (2000, 128, 128, 3), dtype=np.uint8)
        masks = rng.integers(0, 2, (2000, 128, 128), dtype=np.uint8)
        source = "2000 generated images in memory"
    print(f"PyTorch {torch.__version__} DataLoader, batch 16, {source}")
    print("| workers | augment | images/s |\n|---|---|---|")
    for augment in (False, True):
        for workers in (1, 2):
            rate = images_per_second(Pairs(images, masks, augment), workers, args.seconds)
            print(f"| {workers} | {int(augment)} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
