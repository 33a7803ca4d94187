#!/usr/bin/python3
"""The MNIST example's training in Python PyTorch, for a side-by-side speed comparison.

The same CNN as examples/mnist/models.h (conv 1->32 3x3, relu, maxpool 2, conv 32->64 3x3, relu,
maxpool 2, fc 1600->128, relu, dropout 0.25, fc 128->10), the same data (the IDX files read with
gzip and numpy, scaled to [0, 1] and standardized by the training split's mean and standard
deviation, the first --limit examples of each split), batch size, optimizer (SGD with momentum
0.9, or Adam), cross-entropy loss and thread count. Two modes:
  bare  the training loop alone;
  full  the loop plus, after each epoch, an evaluation on the test split (eval mode, no_grad,
        batches of 125 as the C++ evaluator's) and a torch.save of the model and optimizer
        state dicts, fsynced, as a snapshot.
Prints one JSON line: {"mode", "images", "seconds", "images_per_second", "test_accuracy"},
the rate counting training images over the wall time of the loop (data loading excluded, as
the C++ example counts). Run with /usr/bin/python3 (Debian's torch 1.13): benchmarks/mnist_bench.sh
does.
"""
import argparse
import gzip
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

EVAL_BATCH_SIZE = 125  # as the C++ example's evaluator

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(directory, name, dims):
    """An IDX file of unsigned bytes with `dims` dimensions, raw or .gz (raw preferred)."""
    path = os.path.join(directory, name)
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 | dims:
        sys.exit(f"{path}: magic number 0x{magic:08X} is not an IDX{dims} file")
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3)
        self.conv2 = torch.nn.Conv2d(32, 64, 3)
        self.fc1 = torch.nn.Linear(64 * 5 * 5, 128)
        self.dropout = torch.nn.Dropout(0.25)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(self.dropout(x))


def load(directory, limit):
    arrays = {key: read_idx(directory, name, 3 if key.endswith("images") else 1)[:limit]
              for key, name in FILES.items()}
    train = torch.from_numpy(arrays["train_images"].astype(np.float32) / 255).unsqueeze(1)
    test = torch.from_numpy(arrays["test_images"].astype(np.float32) / 255).unsqueeze(1)
    mean, std = train.mean(), train.std()
    train, test = (train - mean) / std, (test - mean) / std
    return (train, torch.from_numpy(arrays["train_labels"].astype(np.int64)),
            test, torch.from_numpy(arrays["test_labels"].astype(np.int64)))


def evaluate(model, images, labels, batch_size):
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(images[start:start + batch_size])
            correct += (logits.argmax(1) == labels[start:start + batch_size]).sum().item()
    model.train()
    return correct / len(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None,
                        help="default: 0.02 for sgd, 0.001 for adam (as the C++ example)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=["bare", "full"], default="bare")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y, test_x, test_y = load(args.data, args.limit)
    model = Cnn()
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr or 0.02, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr or 0.001)
    generator = torch.Generator().manual_seed(args.seed)
    out = tempfile.mkdtemp(prefix="mnist-python-", dir=os.environ.get("TTH_BENCH_DIR", "/var/tmp"))

    images = 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_y), generator=generator)
        for first in range(0, len(train_y), args.batch_size):
            index = order[first:first + args.batch_size]
            optimizer.zero_grad()
            logits = model(train_x[index])
            loss = F.cross_entropy(logits, train_y[index])
            loss.backward()
            optimizer.step()
            # Read the values a report would, so that both sides pay for them.
            loss.item()
            (logits.argmax(1) == train_y[index]).float().mean().item()
            images += len(index)
        if args.mode == "full":
            evaluate(model, test_x, test_y, EVAL_BATCH_SIZE)
            path = os.path.join(out, f"snapshot_epoch_{epoch + 1}.pt")
            with open(path, "wb") as f:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "epoch": epoch + 1}, f)
                f.flush()
                os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, test_x, test_y, EVAL_BATCH_SIZE)
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    os.rmdir(out)
    print(json.dumps({"mode": args.mode, "images": images, "seconds": seconds,
                      "images_per_second": images / seconds, "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
