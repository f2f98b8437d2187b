"""Golden summaries: AlexNet written out by hand, a few others locked as JSON files.

After a deliberate change (a model's layer names, the schema), rewrite the files with
`CNNLAB_UPDATE_GOLDEN=1 pytest tests/analysis/test_golden.py` and review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from cnnlab.analysis import summarize

GOLDEN = Path(__file__).parent / "golden"

# AlexNet (torchvision layout) at 224x224, by hand: out = floor((n + 2p - k) / s) + 1,
# params = k*k*C_in*C_out + C_out, MACs = C_out*H*W*k*k*C_in, RF += (k - 1) * jump, jump *= s.
ALEXNET = [  # name, output (C, H, W) or (features,), params, MACs, RF, jump
    ("features.0", (64, 55, 55), 23_296, 64 * 55 * 55 * 363, 11, 4),  # (224+4-11)//4+1 = 55
    ("features.1", (64, 55, 55), 0, 0, 11, 4),
    ("features.2", (64, 27, 27), 0, 0, 11 + 2 * 4, 8),
    ("features.3", (192, 27, 27), 307_392, 192 * 27 * 27 * 1600, 19 + 4 * 8, 8),
    ("features.4", (192, 27, 27), 0, 0, 51, 8),
    ("features.5", (192, 13, 13), 0, 0, 51 + 2 * 8, 16),
    ("features.6", (384, 13, 13), 663_936, 384 * 169 * 1728, 67 + 2 * 16, 16),
    ("features.7", (384, 13, 13), 0, 0, 99, 16),
    ("features.8", (256, 13, 13), 884_992, 256 * 169 * 3456, 131, 16),
    ("features.9", (256, 13, 13), 0, 0, 131, 16),
    ("features.10", (256, 13, 13), 590_080, 256 * 169 * 2304, 163, 16),
    ("features.11", (256, 13, 13), 0, 0, 163, 16),
    ("features.12", (256, 6, 6), 0, 0, 163 + 2 * 16, 32),
    ("avgpool", (256, 6, 6), 0, 0, 195, 32),  # adaptive 6x6 on 6x6: identity
    ("classifier.0", (9216,), 0, 0, 195 + 5 * 32, None),  # the flatten mixes all 6x6 positions
    ("classifier.1", (4096,), 37_752_832, 9216 * 4096, 355, None),
    ("classifier.2", (4096,), 0, 0, 355, None),
    ("classifier.3", (4096,), 0, 0, 355, None),
    ("classifier.4", (4096,), 16_781_312, 4096 * 4096, 355, None),
    ("classifier.5", (4096,), 0, 0, 355, None),
    ("classifier.6", (1000,), 4_097_000, 4096 * 1000, 355, None),
]


def test_alexnet_by_hand():
    s = summarize("alexnet")
    got = [(r.name, r.output_shape[1:], r.params, r.macs, r.receptive_field[0],
            r.jump[0] if r.jump else None) for r in s.rows]
    assert got == ALEXNET
    assert s.totals.macs == sum(row[3] for row in ALEXNET) == 714_188_480
    assert s.totals.params == sum(row[2] for row in ALEXNET) == 61_100_840


CASES = [("resnet20", 2), ("googlenet", 1), ("densenet121", 1), ("mobilenet_v2", 1),
         ("efficientnet_b0", 1), ("lenet5", None)]


@pytest.mark.parametrize("name, depth", CASES, ids=[c[0] for c in CASES])
def test_golden_summary(name, depth):
    got = json.loads(json.dumps(summarize(name).to_dict(depth)))
    path = GOLDEN / f"{name}.json"
    if os.environ.get("CNNLAB_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(path.read_text())
