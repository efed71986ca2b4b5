"""The DeepLIFT paper's genomics experiment (§3.2): simulated GATA + CAGATG sequences, the
paper's CNN, DeepLIFT (the paper's Rescale rules, RevealCancel on the dense layers, and
DeepLIFT-SHAP) vs gradient×input, and motif-recovery metrics counting planted instances and
chance matches of the motifs.

Run it all with the console command ``deepliftjax-genomics`` (or
``python -m deepliftjax.genomics``); ``--motifs`` adds motif discovery with modisco-lite
(:func:`motif_step`).
"""

from deepliftjax.genomics import targets
from deepliftjax.genomics._attribute import (
    DENSE_RC_CONV_RS,
    METHODS,
    MIXED,
    MORE_METHODS,
    SHAP,
    UNIFORM_REFERENCE,
    attribute,
    deeplift_onehot,
    deeplift_shap_onehot,
    dense_rc_conv_rs_onehot,
    gradient_x_input,
)
from deepliftjax.genomics._experiment import TINY, Config, main, run_experiment
from deepliftjax.genomics._metrics import (
    auprc,
    auroc,
    motif_auprc,
    per_position,
    top_window_hit,
)
from deepliftjax.genomics._model import GenomicsCNN, PReLU, window_max
from deepliftjax.genomics._motifs import (
    MODISCO,
    TINY_MODISCO,
    DiscoveredPattern,
    discover_motifs,
    match_motifs,
    motif_step,
    similarity,
)
from deepliftjax.genomics._report import format_table, plot_patterns, plot_scores, write_report
from deepliftjax.genomics._scan import chance_matches, match_starts
from deepliftjax.genomics._simulate import (
    BASES,
    GATA,
    TAL1,
    Motif,
    SimulatedData,
    load_motifs,
    parse_motifs,
    simulate,
    split,
)
from deepliftjax.genomics._train import TrainResult, predict, train
from deepliftjax.genomics.enformer import Enformer
from deepliftjax.genomics.models import (
    BPNet,
    ChromBPNet,
    bpnet_params_from_torch,
    chrombpnet_params_from_torch,
)

__all__ = [
    "BPNet",
    "ChromBPNet",
    "DiscoveredPattern",
    "Enformer",
    "bpnet_params_from_torch",
    "chrombpnet_params_from_torch",
    "discover_motifs",
    "match_motifs",
    "motif_step",
    "MODISCO",
    "TINY_MODISCO",
    "plot_patterns",
    "similarity",
    "targets",
    "BASES",
    "GATA",
    "METHODS",
    "MORE_METHODS",
    "MIXED",
    "SHAP",
    "DENSE_RC_CONV_RS",
    "chance_matches",
    "match_starts",
    "deeplift_shap_onehot",
    "dense_rc_conv_rs_onehot",
    "TAL1",
    "TINY",
    "UNIFORM_REFERENCE",
    "Config",
    "GenomicsCNN",
    "Motif",
    "PReLU",
    "SimulatedData",
    "TrainResult",
    "attribute",
    "auprc",
    "auroc",
    "deeplift_onehot",
    "format_table",
    "gradient_x_input",
    "load_motifs",
    "main",
    "motif_auprc",
    "parse_motifs",
    "per_position",
    "plot_scores",
    "predict",
    "run_experiment",
    "simulate",
    "split",
    "top_window_hit",
    "train",
    "window_max",
    "write_report",
]
