"""Simulated DNA of the paper's §3.2: GATA and CAGATG (E-box) motifs in a uniform background."""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Mapping, Sequence

import numpy as np

from deepliftjax._errors import error

BASES = "ACGT"
GATA = "GATA_disc1"
TAL1 = "TAL1_known1"
_MOTIF_FILE = "motifs_sec3.2.txt"
_FORMAT = (
    "write each motif as a '>NAME' header line followed by one row 'LETTER pA pC pG pT' "
    "per position (probabilities or counts)."
)


@dataclasses.dataclass(frozen=True)
class Motif:
    """A position weight matrix.

    Attributes:
      name: the motif's name.
      pwm: (length, 4) float64 probabilities over A, C, G, T; rows sum to 1.
    """

    name: str
    pwm: np.ndarray

    @property
    def length(self) -> int:
        return int(self.pwm.shape[0])

    @property
    def consensus(self) -> str:
        return "".join(BASES[i] for i in self.pwm.argmax(axis=1))

    @property
    def information_content(self) -> np.ndarray:
        """(length,) information content in bits against a uniform background: 2 - entropy."""
        p = self.pwm
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log2(p), 0.0)
        return 2.0 + plogp.sum(axis=1)

    def informative(self, min_bits: float = 1.0) -> np.ndarray:
        """(length,) bool mask of positions with information content >= min_bits."""
        return self.information_content >= min_bits


def parse_motifs(text: str) -> dict[str, Motif]:
    """Parses the motif file format.

    Lines starting with '#' and blank lines are ignored; '>NAME ...' starts a motif; each
    following line is 'LETTER pA pC pG pT'. Rows are renormalised to sum to 1.

    Args:
      text: the file's contents.

    Returns:
      A dict name -> Motif, in file order.
    """
    motifs: dict[str, list[list[float]]] = {}
    name = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(">"):
            fields = line[1:].split()
            if not fields:
                raise error(f"line {lineno}: motif header without a name: {raw!r}.", _FORMAT)
            name = fields[0]
            if name in motifs:
                raise error(
                    f"line {lineno}: duplicate motif {name!r}.", "give every motif its own name."
                )
            motifs[name] = []
            continue
        if name is None:
            raise error(f"line {lineno}: matrix row before any '>NAME' header: {raw!r}.", _FORMAT)
        fields = line.split()
        if len(fields) != 5:
            raise error(f"line {lineno}: expected 'LETTER pA pC pG pT', got {raw!r}.", _FORMAT)
        try:
            motifs[name].append([float(v) for v in fields[1:]])
        except ValueError as e:
            raise error(f"line {lineno}: non-numeric probability in {raw!r}.", _FORMAT) from e
    out = {}
    for k, rows in motifs.items():
        pwm = np.asarray(rows, dtype=np.float64)
        if pwm.size == 0:
            raise error(f"motif {k!r} has no rows.", _FORMAT)
        if (pwm < 0).any() or (pwm.sum(axis=1) <= 0).any():
            raise error(
                f"motif {k!r}: probabilities must be >= 0 with a positive row sum.",
                "rows are probabilities or counts of A, C, G, T (normalised on reading).",
            )
        out[k] = Motif(k, pwm / pwm.sum(axis=1, keepdims=True))
    return out


def load_motifs() -> dict[str, Motif]:
    """Loads the GATA_disc1 and TAL1_known1 PWMs shipped with the package.

    Returns:
      A dict name -> Motif.
    """
    text = importlib.resources.files(__package__).joinpath("data").joinpath(_MOTIF_FILE).read_text()
    return parse_motifs(text)


@dataclasses.dataclass(frozen=True)
class SimulatedData:
    """One-hot sequences, labels and true motif positions.

    Attributes:
      x: (n, length, 4) float32 one-hot sequences (A, C, G, T).
      y: (n,) int32 labels; 1 for sequences holding both motifs.
      starts: motif name -> (n, 2) int32 start positions of up to two instances; -1 if absent.
      masks: motif name -> (n, length) bool, True on positions covered by an instance.
      core_masks: motif name -> (n, length) bool, True on the instances' informative positions.
    """

    x: np.ndarray
    y: np.ndarray
    starts: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    core_masks: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray | slice) -> SimulatedData:
        """Returns the rows `idx` of every field."""
        return SimulatedData(
            self.x[idx],
            self.y[idx],
            {k: v[idx] for k, v in self.starts.items()},
            {k: v[idx] for k, v in self.masks.items()},
            {k: v[idx] for k, v in self.core_masks.items()},
        )


def _sample_pwm(rng: np.random.Generator, pwm: np.ndarray, n: int) -> np.ndarray:
    """(n, L) int base indices sampled position-wise from pwm."""
    cdf = np.cumsum(pwm, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random((n, pwm.shape[0]))
    return (u[..., None] >= cdf[None, :, :3]).sum(-1)


def simulate(
    n: int,
    *,
    seq_len: int = 200,
    motifs: Mapping[str, Motif] | None = None,
    names: Sequence[str] = (GATA, TAL1),
    positive_fraction: float = 0.5,
    min_bits: float = 1.0,
    seed: int = 0,
    max_tries: int = 1000,
) -> SimulatedData:
    """Simulates the §3.2 data set.

    Background bases are uniform. Positives hold one instance of each of the two motifs;
    negatives hold one or two instances of one motif only (motif and count uniform at random).
    Each instance is sampled from its PWM on the forward strand; instances never overlap.

    Args:
      n: number of sequences.
      seq_len: sequence length.
      motifs: name -> Motif; defaults to the shipped PWMs.
      names: the two motif names to use.
      positive_fraction: fraction of positives (rounded to a whole number).
      min_bits: information content threshold of a motif's informative ("core") positions.
      seed: random seed.
      max_tries: rejection-sampling rounds to place non-overlapping instances.

    Returns:
      A SimulatedData.
    """
    if n < 1:
        raise error(f"n must be >= 1, got {n}.", "ask for at least one sequence.")
    if not 0.0 <= positive_fraction <= 1.0:
        raise error(
            f"positive_fraction must be in [0, 1], got {positive_fraction}.",
            "pass the fraction of sequences that carry both motifs.",
        )
    motifs = load_motifs() if motifs is None else motifs
    names = tuple(names)
    if len(names) != 2:
        raise error(
            f"names must hold exactly two motif names, got {names}.",
            'name the two motifs to embed, e.g. ("GATA_disc1", "TAL1_known1").',
        )
    missing = [k for k in names if k not in motifs]
    if missing:
        raise error(
            f"unknown motif(s) {missing}; known: {sorted(motifs)}.",
            "pick names from the known motifs, or pass motifs= your own parse_motifs table.",
        )
    lengths = np.array([motifs[k].length for k in names])
    if 2 * lengths.max() > seq_len:
        raise error(
            f"seq_len={seq_len} is too short for two instances of length {lengths}.",
            f"pass seq_len >= {2 * lengths.max()}.",
        )

    rng = np.random.default_rng(seed)
    seq = rng.integers(0, 4, size=(n, seq_len))
    y = np.zeros(n, dtype=np.int32)
    y[rng.permutation(n)[: int(round(positive_fraction * n))]] = 1

    # Four instance slots: (motif 0 #1, motif 0 #2, motif 1 #1, motif 1 #2).
    slot_motif = np.array([0, 0, 1, 1])
    slot_len = lengths[slot_motif]
    which = rng.integers(0, 2, size=n)  # negatives: the one motif present
    two = rng.random(n) < 0.5  # negatives: two instances
    pos = y == 1
    active = np.zeros((n, 4), dtype=bool)
    active[:, 0] = pos | (which == 0)
    active[:, 1] = ~pos & (which == 0) & two
    active[:, 2] = pos | (which == 1)
    active[:, 3] = ~pos & (which == 1) & two

    starts = np.zeros((n, 4), dtype=np.int64)
    todo = np.ones(n, dtype=bool)
    for _ in range(max_tries):
        k = int(todo.sum())
        if k == 0:
            break
        starts[todo] = (rng.random((k, 4)) * (seq_len - slot_len + 1)).astype(np.int64)
        s, e, a = starts, starts + slot_len, active
        overlap = (s[:, :, None] < e[:, None, :]) & (s[:, None, :] < e[:, :, None])
        overlap &= a[:, :, None] & a[:, None, :] & ~np.eye(4, dtype=bool)
        todo = overlap.any(axis=(1, 2))
    else:
        raise RuntimeError("could not place non-overlapping motif instances; raise max_tries")

    rows = np.arange(n)
    out_starts, masks, core_masks = {}, {}, {}
    for m, name in enumerate(names):
        motif = motifs[name]
        core = motif.informative(min_bits)
        mask = np.zeros((n, seq_len), dtype=bool)
        core_mask = np.zeros((n, seq_len), dtype=bool)
        for slot in np.flatnonzero(slot_motif == m):
            sel = rows[active[:, slot]]
            cols = starts[sel, slot][:, None] + np.arange(motif.length)[None]
            seq[sel[:, None], cols] = _sample_pwm(rng, motif.pwm, sel.size)
            mask[sel[:, None], cols] = True
            core_mask[sel[:, None], cols[:, core]] = True
        st = np.where(active[:, slot_motif == m], starts[:, slot_motif == m], -1)
        out_starts[name] = st.astype(np.int32)
        masks[name] = mask
        core_masks[name] = core_mask
    x = np.eye(4, dtype=np.float32)[seq]
    return SimulatedData(x, y, out_starts, masks, core_masks)


def split(
    data: SimulatedData, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> tuple[SimulatedData, ...]:
    """Splits data in order into consecutive parts (simulated rows are already shuffled).

    Args:
      data: the data set.
      fractions: the parts' fractions; must sum to 1.

    Returns:
      One SimulatedData per fraction.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if (fr <= 0).any() or not np.isclose(fr.sum(), 1.0):
        raise error(
            f"fractions must be positive and sum to 1, got {fractions}.",
            "pass the train, validation and test shares, e.g. (0.8, 0.1, 0.1).",
        )
    bounds = np.round(np.cumsum(fr) * len(data)).astype(int)
    bounds = np.concatenate([[0], bounds])
    parts = tuple(data.subset(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    if any(len(p) == 0 for p in parts):
        raise error(
            f"{len(data)} sequences are too few for fractions {fractions}.",
            "simulate more sequences, or give every part a larger share.",
        )
    return parts
