"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 1998) and the "modern" LeNet-5 as commonly coded today.

Shape walk at the design size (1 x 32 x 32; MNIST's 28 x 28 digits are centred in a 32 x 32 field,
as in the paper):

    C1  conv 5x5        6 @ 28x28      156 params
    S2  2x2 subsample   6 @ 14x14       12 (one coefficient + one bias per map)
    C3  conv 5x5       16 @ 10x10    1,516 (sparse: 60 of the 96 map pairs, paper Table I)
    S4  2x2 subsample  16 @ 5x5         32
    C5  conv 5x5      120 @ 1x1     48,120
    F6  linear         84           10,164
                                    ---------
                                    60,000 trainable parameters in C1..F6, as the paper states
    output             10           paper: RBF units with fixed +-1 codes (0 trainable);
                                    default here: Linear(84, 10) (850), see below

The input is 32 x 32 by design: C5 must see a 5 x 5 map so that F6's 120 inputs line up (31 is
too small; 33-35 also run because pooling rounds down; 36 no longer fits F6).

Output layer. The paper's is a set of Euclidean RBF units with fixed +-1 codes, offered as
`head="rbf"` (then the trainable count is exactly the paper's 60,000). Its logits are the negative
squared distances -||f6 - code_k||^2, so plain cross-entropy trains it. The default is
`head="linear"`, a trainable Linear(84, num_classes): 60,850 parameters (C1..F6 are still the
paper's 60,000). Reason: every code has the same norm, so softmax of the RBF logits equals softmax
of 2 * f6 . code_k, a fixed linear layer with weights +-2 and no 1/sqrt(84) scaling. Its gradient
into F6 is about 120x larger than a freshly initialised learned head's (measured), and SGD at the
learning rates people use for MNIST (0.05-0.1) saturates every tanh and stalls at chance
(measured: 9.8% after one epoch at lr 0.05, where the linear head reaches 97.5%). The linear head
trains with any usual recipe.

Measured on MNIST (28x28 padded to 32x32, standardised with MNIST's mean/std; SGD + Nesterov
0.9, cosine from lr 0.05, wd 5e-4, batch 128, 10 epochs): default 99.02% test accuracy, 99.25%
with random +-2 pixel translations; head="rbf" at lr 0.01 98.81%; init="xavier" 98.88%. The
paper's init (the default) is kept: it does as well as Xavier here. The shipped recipe
(cnnlab/configs/lenet5-mnist.yaml) feeds the paper's input instead (sec. II-A: background -0.1,
foreground 1.175, `pixel_range`): 99.25% with the translations (99.30% standardised).

`lenet5_modern` is the version most tutorials write: ReLU, max-pooling, a dense C3 and a linear
output: 61,706 parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family

# Paper Table I: C3 feature map -> the S2 maps it reads.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

RBF_CODE_SEED = 1998  # the fixed output codes are reproducible from this seed


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (paper, Appendix A): f(+-1) = +-1, and the
    second derivative is largest at +-1."""

    def __init__(self, inplace: bool = False):  # `inplace` accepted for act_layer uniformity
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class TrainableSubsample(nn.Module):
    """S2 / S4: the sum of each 2x2 block times one trainable coefficient, plus one trainable
    bias, per feature map (the squashing activation follows as a separate module)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the 2x2 sums, N x C x H/2 x W/2 (avg x 4, exact: divisor_override=1 exports wrongly
        # to ONNX, whose AveragePool has no divisor)
        summed = F.avg_pool2d(x, 2) * 4.0
        # bias + sum * coefficient in one op (fewer ops: faster training and analysis)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), summed, self.weight.view(1, -1, 1, 1))


class SparseConv2d(nn.Module):
    """A convolution where output map o reads only the input maps `table[o]` (paper's C3).

    Only the connected kernels are parameters (`weight`: one 5x5 kernel per connection, in table
    order), so the trainable count is exactly 25 * 60 + 16 = 1,516. Each forward scatters them
    into a dense, zero-filled kernel and runs one ordinary convolution.
    """

    def __init__(self, in_chs: int, table: tuple[tuple[int, ...], ...], kernel_size: int = 5):
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size = in_chs, len(table), kernel_size
        self.table = table
        flat = [o * in_chs + i for o, inputs in enumerate(table) for i in inputs]
        self.weight = nn.Parameter(torch.empty(len(flat), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(len(table)))
        # flat position of each connection in the dense (out * in) kernel grid; persistent, so a
        # checkpoint carries its own wiring
        self.register_buffer("index", torch.tensor(flat, dtype=torch.long))

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_chs * self.in_chs, k, k)
        dense = dense.index_copy(0, self.index, self.weight)
        return dense.view(self.out_chs, self.in_chs, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def fan_in(self, out_map: int) -> int:
        return len(self.table[out_map]) * self.kernel_size ** 2

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}, kernel_size={self.kernel_size}, " \
               f"connections={self.weight.shape[0]}"


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed +-1 codes (paper section II-B): logit_k = -||x - code_k||^2.

    The paper drew the codes as 7x12 bitmaps of the characters and notes that random +-1 codes
    would also do; we use random +-1 codes from a fixed seed (`RBF_CODE_SEED`). They are a
    buffer (saved with the model, never trained)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        gen = torch.Generator(device="cpu").manual_seed(RBF_CODE_SEED)
        bits = torch.randint(0, 2, (num_classes, in_features), generator=gen, device="cpu")
        codes = (bits * 2 - 1).float().to(torch.get_default_device())
        self.register_buffer("codes", codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, as one matmul
        dist = (x * x).sum(1, keepdim=True) - 2 * x @ self.codes.t() + (self.codes ** 2).sum(1)
        return -dist

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, fixed codes"


_HEADS: dict[str, Callable[[int, int], nn.Module]] = {"rbf": RBFOutput, "linear": nn.Linear}


class LeNet5(ZooModel):
    """C1-S2-C3-S4-C5 (`features`) then F6 and the output layer (the head).

    Attribute names are the paper's layer names. `forward_features` returns C5's activations
    (N x 120 x 1 x 1, `num_features` = 120); `forward_head(x, pre_logits=True)` returns F6's.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1,
                 act_layer: Callable[..., nn.Module] = ScaledTanh,
                 pool_layer: Callable[[int], nn.Module] = TrainableSubsample,
                 c3_table: tuple[tuple[int, ...], ...] | None = C3_TABLE,
                 head: str = "linear", init: str = "paper"):
        super().__init__()
        if head not in _HEADS:
            raise UsageError(f"head must be one of {sorted(_HEADS)}, got {head!r}")
        if init not in ("paper", "xavier", "he"):
            raise UsageError(f"init must be 'paper', 'xavier' or 'he', got {init!r}")
        c3 = SparseConv2d(6, c3_table) if c3_table is not None else nn.Conv2d(6, 16, 5)
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(in_chans, 6, 5)), ("act1", act_layer()),   # 6 x 28 x 28
            ("s2", pool_layer(6)), ("act2", act_layer()),               # 6 x 14 x 14
            ("c3", c3), ("act3", act_layer()),                          # 16 x 10 x 10
            ("s4", pool_layer(16)), ("act4", act_layer()),              # 16 x 5 x 5
            ("c5", nn.Conv2d(16, 120, 5)), ("act5", act_layer()),       # 120 x 1 x 1
        ]))
        self.f6 = nn.Linear(120, 84)
        self.act6 = act_layer()
        self.head_type = head
        self.output = _HEADS[head](84, num_classes)
        self.num_features = 120
        self.num_classes = num_classes
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        if init != "paper":
            # "he": He et al. 2015, for the ReLU version; "xavier": Glorot & Bengio 2010, the
            # tanh-era successor of the paper's rule. The subsampling layers keep coefficient 1.
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    if init == "he":
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    else:
                        nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, SparseConv2d):
                    # Xavier's bound with each map's own fan-in; fan-out: in Table I every S2
                    # map feeds 10 C3 maps (60 connections / 6 maps) of 25 weights each
                    fan_out = m.weight.shape[0] // m.in_chs * m.kernel_size ** 2
                    with torch.no_grad():
                        o = 0
                        for out_map, inputs in enumerate(m.table):
                            bound = (6 / (m.fan_in(out_map) + fan_out)) ** 0.5
                            m.weight[o:o + len(inputs)].uniform_(-bound, bound)
                            o += len(inputs)
                    nn.init.zeros_(m.bias)
            return
        # Paper, Appendix A: uniform in +-2.4 / F_i, F_i = the unit's fan-in (its number of
        # inputs; for C3 it differs per map, for S2/S4 it is the 4 pixels of a 2x2 block).
        # Biases start at zero.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.uniform_(m.weight, -2.4 / fan_in, 2.4 / fan_in)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -2.4 / m.in_features, 2.4 / m.in_features)
                nn.init.zeros_(m.bias)
            elif isinstance(m, SparseConv2d):
                with torch.no_grad():
                    o = 0
                    for out_map, inputs in enumerate(m.table):
                        bound = 2.4 / m.fan_in(out_map)
                        m.weight[o:o + len(inputs)].uniform_(-bound, bound)
                        o += len(inputs)
                nn.init.zeros_(m.bias)
            elif isinstance(m, TrainableSubsample):
                nn.init.uniform_(m.weight, -2.4 / 4, 2.4 / 4)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act6(self.f6(torch.flatten(x, 1)))
        return x if pre_logits else self.output(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = _HEADS[self.head_type](84, num_classes)


def _max_pool_2x2(channels: int) -> nn.Module:  # same call shape as TrainableSubsample
    return nn.MaxPool2d(2)


_LECUN_1998 = "LeCun, Bottou, Bengio & Haffner, Gradient-based learning applied to document " \
              "recognition, Proc. IEEE 1998"

VARIANTS = [
    Variant("lenet5", dict(act_layer=ScaledTanh, pool_layer=TrainableSubsample,
                           c3_table=C3_TABLE, head="linear", init="paper"), dict(
        params=60_850,  # 60,000 (C1..F6) + Linear(84, 10); head="rbf" gives exactly 60,000
        paper_result="MNIST test error 0.95% (0.8% with distortions)",
        notes="output layer: a trainable Linear(84, 10) by default (head='rbf' is the paper's "
              "fixed RBF layer; module docstring says why); input normalised as the paper "
              "(background -0.1, foreground 1.175) by the lenet5-mnist recipe")),
    Variant("lenet5_modern", dict(act_layer=nn.ReLU, pool_layer=_max_pool_2x2, c3_table=None,
                                  head="linear", init="he"), dict(
        params=61_706, follows="common",
        paper_result=None,  # not in the paper: the ReLU / max-pool re-coding of the 1998 net
        notes="ReLU, max-pooling, dense C3, linear output; inputs standardised with the "
              "dataset's mean and std")),
]

register_family(LeNet5, VARIANTS, family="lenet", paper=_LECUN_1998, year=1998,
                input_size=(1, 32, 32),
                min_size=32,  # fixed: C5's 5x5 kernel must land on exactly one 5x5 map position
                key_idea="conv-pool stacks learn features end to end", num_classes=10)
