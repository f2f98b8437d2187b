"""The worked examples: every printed sum re-added, formulas with hand-computed numbers."""

import re

import pytest

from cnnlab.errors import UsageError
from cnnlab.inside import explain_bottleneck, explain_conv, explain_pool


def _products(text):
    """[(terms, printed result)] of each 'out[y,x] ... a*b + c*d = r' line."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s+out\[\d+,\d+\].*?:\s+(.*) = (-?\d+)$", line)
        if m:
            terms = [tuple(float(v.strip("()")) for v in t.split("*"))
                     for t in m.group(1).split(" + ")]
            rows.append((terms, int(m.group(2))))
    return rows


def test_conv_notes_example_5x5_k3_p1_s2():
    text = explain_conv((5, 5), 3, padding=1, stride=2)
    rows = _products(text)
    assert len(rows) == 9  # 3x3 outputs
    for terms, result in rows:
        assert len(terms) == 9 and sum(a * b for a, b in terms) == result
    assert "floor((5 + 2*1 - 3) / 2) + 1 = 3" in text
    assert "3*3*1*1 + 1 = 10 (9 weights + 1 bias)" in text
    assert "Padded input (7x7" in text


def test_conv_parameter_count_and_dilation():
    text = explain_conv((7, 7), 3, dilation=2, in_channels=3, out_channels=64)
    assert "floor((7 + 2*0 - 2*(3-1)+1) / 1) + 1 = 3" in text
    assert "3*3*3*64 + 64 = 1,792" in text  # AlexNet-sized 3->64 conv: 1,728 weights + 64
    assert all(len(t) == 9 for t, _ in _products(text))


def test_pool_windows():
    text = explain_pool((4, 4), 2)
    for line in text.splitlines():
        m = re.match(r"\s+out\[\d,\d\].*max\((.*)\) = (\d+)$", line)
        if m:
            assert max(int(v) for v in m.group(1).split(", ")) == int(m.group(2))
    assert "floor((4 + 2*0 - 2) / 2) + 1 = 2" in text and "Parameters: 0" in text


def test_bottleneck_numbers_of_resnet50():
    text = explain_bottleneck(256, 64, 56)
    # 256*64 + 9*64*64 + 64*256 = 16,384 + 36,864 + 16,384 = 69,632 vs 9*256*256 = 589,824
    assert "69,632 weights" in text and "589,824 weights" in text
    assert "8.5x fewer weights" in text
    assert "218,365,952 MACs" in text  # 69,632 * 56 * 56


@pytest.mark.parametrize("call", [
    lambda: explain_conv((4, 4), 7), lambda: explain_conv((40, 40), 3),
    lambda: explain_conv((5, 5), 3, stride=0), lambda: explain_pool((4, 4), 2, mode="median"),
    lambda: explain_bottleneck(0, 64, 56)])
def test_bad_requests_raise_usage_errors(call):
    with pytest.raises(UsageError):
        call()
