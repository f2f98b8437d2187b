"""Analysis of networks: exact arithmetic, and a per-layer summary from one meta-device pass."""

from cnnlab.analysis.arithmetic import ReceptiveField, conv_output_size, receptive_field
from cnnlab.analysis.summary import LayerRow, Summary, Totals, compare, summarize

__all__ = ["LayerRow", "ReceptiveField", "Summary", "Totals", "compare", "conv_output_size",
           "receptive_field", "summarize"]
