"""Started by torchrun in test_distributed.py: train, and let rank 0 alone ask to stop at a
given update (the other rank must stop at the same step without being asked)."""

import sys

import cnnlab
from cnnlab.train import Callback, TrainingInterrupted
from cnnlab.train.distributed import from_environment


class StopOnRankZero(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, step):
        if from_environment().is_main and step.index + 1 == self.at:
            step.request_stop()


if __name__ == "__main__":
    out, at, settings = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3])  # test-owned input
    try:
        cnnlab.train("lenet5", "mnist", out=out, callbacks=[StopOnRankZero(at)], **settings)
    except TrainingInterrupted as stop:
        print(f"rank {from_environment().rank} stopped: {stop.where}", flush=True)
        sys.exit(130)
