"""The baseline of `bench_time_to_accuracy.py`: PyTorch's stock MNIST example recipe, written
here from its description (pytorch/examples, mnist/main.py) so that it runs without torchvision.

    python benchmarks/stock_mnist.py [--target 99.0] [--epochs 14] [--data-dir DIR]

The recipe: conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, 2x2 max-pool, dropout 0.25, fc
9216->128, ReLU, dropout 0.5, fc 128->10, log-softmax + NLL loss; Adadelta lr 1.0, StepLR
(step 1 epoch, gamma 0.7), batch 64 (test batch 1000), seed 1, inputs normalised with
(0.1307, 0.3081), test after every epoch on the 10,000 test images. As in the example, the
data goes through a DataLoader with per-sample transforms (uint8 image -> float in [0, 1] ->
normalised); the images come from cnnlab's verified copy of the official files instead of
torchvision's MNIST class (same files, same pixels).

It prints one JSON line per epoch and stops at the first epoch whose test accuracy reaches
--target: {"epoch", "test_top1", "seconds_since_start"}; the times count from process start.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the imports: the wall time of the whole process is what counts

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from cnnlab.data import load_dataset  # noqa: E402


class StockNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


class PerSampleMNIST(torch.utils.data.Dataset):
    """What ToTensor() + Normalize((0.1307,), (0.3081,)) give, one image at a time."""

    def __init__(self, split: str, data_dir):
        ds = load_dataset("mnist", split=split, data_dir=data_dir)
        self.images, self.labels = ds.images, ds.labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div(255.0)
        return (x - 0.1307) / 0.3081, int(self.labels[i])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=float, default=99.0)
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(1)
    train = torch.utils.data.DataLoader(PerSampleMNIST("train", args.data_dir), batch_size=64,
                                        shuffle=True)
    test = torch.utils.data.DataLoader(PerSampleMNIST("test", args.data_dir), batch_size=1000)
    model = StockNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in train:
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += int((model(x).argmax(1) == y).sum())
        schedule.step()
        top1 = 100.0 * correct / len(test.dataset)
        print(json.dumps({"epoch": epoch, "test_top1": top1,
                          "seconds_since_start": round(time.time() - STARTED, 2)}), flush=True)
        if top1 >= args.target:
            return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
