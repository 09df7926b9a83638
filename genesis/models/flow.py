"""Conditional normalizing flow over a whole event (RealNVP/Glow style, exact log-likelihood).

An event in normalized space is x (B, 2, P): channel 0 = npe, channel 1 = first-hit time; DOMs are
ordered string by string. The flow maps x to z (B, 2, P) with a standard normal base density,
conditioned on labels (B, 6) and geometry (3, P) or (B, 3, P), both normalized.

Transforms follow the nflows convention: every one is an nn.Module with
``forward(x, context) -> (y, logabsdet (B,))`` and ``inverse(y, context) -> (x, logabsdet (B,))``,
where ``inverse`` returns the log|det| of the inverse map (= minus that of the forward map).
``context`` is a `Context`: the (B, T, H) token embedding of geometry and labels, computed once per
call by the shared `ContextEncoder` (T = P / patch_size string tokens), and the per-DOM inputs that the
couplings' per-DOM networks read (flow.dom_width > 0).

Each flow step is ActNorm then an AffineCoupling. The coupling masks alternate between layers along
directions that make sense for the detector (even/odd DOMs along a string, time given npe and npe
given time, top/bottom half of a string); this fixed alternation plays the role of Glow's permutation
(a DOM permutation would scramble the string tokens the coupling networks read).

Zero-inflated data and dequantization
-------------------------------------
DOMs without a hit all carry the same value (the normalized value of npe 0 and time 0, `nohit_value`,
e.g. (-0.5, -4.5) for log1p npe with offset 1 / scale 2 and linear time with offset 9000 ns / scale
2000 ns), and simulated npe are integer counts: the data distribution has point masses and no density.
`ConditionalFlow.dequantize` spreads only those point masses before the NLL is evaluated (the NLL of the
dequantized data is a proper density):
- no-hit DOMs: npe uniformly in (v - w, v], one-sided below the no-hit value v (w = cfg.dequant_noise,
  normalized units), so they never overlap the hits and the model learns "no hit" as the region below v;
  their time (a sentinel, not a hit time) uniformly in v_t +- w/2;
- hit DOMs whose npe is an integer count: npe + U(-1/2, 1/2) photoelectrons before the npe transform
  (a 1-pe hit stays above the 0.5-pe hit threshold); non-integer charges (real pulse sums) are kept;
- hit times are never changed: they are continuous, and noise would blur the few-ns structure the flow
  has to learn.
The no-hit value comes from the model's own normalization metadata, so any offsets work.

The hit head (flow.hit_head > 0)
--------------------------------
The hurdle part of the model: `HitHead` gives every DOM, from the DOMs observed around it, P(hit) and a
normal density of a hit's npe and time. It is trained with the flow on random masks (`training_masks`,
`hit_loss`), its NLL added to the flow's; flow MAP inpainting (`genesis.inpaint`) takes hit / no hit of
masked DOMs from it and multiplies its value density into the flow's. Sampling does not use it.

From samples to events
----------------------
`ConditionalFlow.sample` returns continuous normalized values. `genesis.sampling` denormalizes them
and treats every DOM whose sampled npe is below ``cfg.hit_threshold`` photoelectrons as a no-hit DOM
(npe 0 and time 0 in the written file); the sampled time of such DOMs is discarded.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from genesis.config import FlowConfig
from genesis.data.normalization import Normalization, forward_npe, forward_time, inverse_npe
from genesis.errors import ConfigError
from genesis.geometry import DOMS_PER_STRING
from genesis.models import physics
from genesis.models.common import NormalizationMetadata, patchify, unpatchify

LABEL_DIM = 6
Pair = tuple[torch.Tensor, torch.Tensor]  # (output (B, 2, P), logabsdet (B,))
MASK_KINDS = ("odd-doms", "even-doms", "time", "npe", "bottom-half", "top-half")
NOHIT_TOLERANCE = 1e-5  # |npe_n - no-hit value| below this (normalized units) is a DOM without a hit
COUNT_TOLERANCE = 1e-5  # relative distance of a hit's npe to the nearest integer for it to be a count
GEOMETRY_CHANNELS = 3
TOKEN_SUMMARY = 8  # token features handed to the per-DOM network of a coupling


class Context(NamedTuple):
    """What the couplings condition on, computed once per flow call: tokens (B, T, H) from the
    `ContextEncoder`, and per-DOM inputs dom (B, 3 [+ physics.DOM_FEATURES], P) (normalized position,
    then the light geometry with conditioning 'physics'), or None when no coupling reads them."""

    tokens: torch.Tensor
    dom: torch.Tensor | None


# --- transforms -------------------------------------------------------------------------------------
class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale), per channel (2,) or per channel and DOM (2, P).

    Data-dependent init (Glow): the first forward call sets bias and log_scale so that this batch comes
    out with zero mean and unit variance. The std is floored at `min_std` because, with zero-inflated
    data, a DOM never hit in the first batch would otherwise get an enormous scale.
    """

    def __init__(self, n_doms: int, per_dom: bool = False, min_std: float = 1e-2) -> None:
        super().__init__()
        shape = (2, n_doms) if per_dom else (2, 1)
        self.per_dom, self.min_std = per_dom, min_std
        self.bias = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        dims = (0,) if self.per_dom else (0, 2)
        mean = x.mean(dims).reshape(self.bias.shape)
        std = x.std(dims, unbiased=False).reshape(self.bias.shape)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(self.min_std)))
        self.initialized.fill_(True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        per_event = self.log_scale.expand(2, x.shape[-1]).sum()
        return per_event.expand(x.shape[0])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self._initialize(x)
        return (x + self.bias) * torch.exp(self.log_scale), self._logdet(x)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return y * torch.exp(-self.log_scale) - self.bias, -self._logdet(y)


def coupling_mask(kind: str, n_doms: int, segment: int) -> torch.Tensor:
    """Bool (2, P): True where the coupling transforms, False where it conditions.

    segment: DOMs per string (the unit along which even/odd and top/bottom halves are counted).
    """
    pos = torch.arange(n_doms) % segment  # position along the string, 0 = top
    dom_sel = {
        "odd-doms": pos % 2 == 1,
        "even-doms": pos % 2 == 0,
        "bottom-half": pos >= segment // 2,
        "top-half": pos < segment // 2,
    }
    if kind in dom_sel:
        return dom_sel[kind].unsqueeze(0).expand(2, n_doms).clone()
    if kind in ("time", "npe"):
        mask = torch.zeros(2, n_doms, dtype=torch.bool)
        mask[1 if kind == "time" else 0] = True
        return mask
    raise ConfigError(f"unknown coupling mask kind {kind!r}; known: {list(MASK_KINDS)}")


def above_below_on_string(v: torch.Tensor, segment: int) -> torch.Tensor:
    """Values (B, C, P) -> the values of the index-adjacent DOMs above and below on the same string (B, 2C, P),
    zero past either end. segment: DOMs per string (P must be a multiple)."""
    b, c, p = v.shape
    strings = v.reshape(b, c, p // segment, segment)
    above = nn.functional.pad(strings[..., :-1], (1, 0))
    below = nn.functional.pad(strings[..., 1:], (0, 1))
    return torch.cat([above, below], 1).reshape(b, 2 * c, p)


class Conditioner(nn.Module):
    """Transformer over string tokens: (masked x (B, 2, P), `Context`) -> shift, log-scale (B, 2, P).

    With dom_width > 0 a per-DOM network adds its own shift and log-scale for every DOM from that DOM's
    masked values, its per-DOM inputs (position, light geometry) and a summary of its token: a 60-DOM
    token alone must squeeze where the light goes along the string through a few numbers.
    neighbours > 0 (DOMs per string): the per-DOM network also reads the masked values of the DOMs above
    and below (`above_below_on_string`): light reaches neighbours 17 m apart within tens of ns, the strongest
    local correlation in an event, which a token summary blurs.
    The last layers are zero-initialised so that the coupling starts as the identity.
    """

    def __init__(self, hidden: int, depth: int, heads: int, patch_size: int, dom_inputs: int = 0,
                 dom_width: int = 0, neighbours: int = 0) -> None:
        super().__init__()
        self.patch_size, self.neighbours = patch_size, neighbours
        self.embed = nn.Linear(2 * patch_size, hidden)
        self.context_proj = nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 2 * 2 * patch_size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.dom_net = None
        if dom_width:
            self.summary = nn.Linear(hidden, TOKEN_SUMMARY)
            own = 2 + (4 if neighbours else 0)
            self.dom_net = nn.Sequential(nn.Linear(own + dom_inputs + TOKEN_SUMMARY, dom_width), nn.SiLU(),
                                         nn.Linear(dom_width, 4))
            nn.init.zeros_(self.dom_net[-1].weight)
            nn.init.zeros_(self.dom_net[-1].bias)

    def forward(self, x_cond: torch.Tensor, context: Context | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context: a `Context`, or its tokens (B, T, H) alone for a coupling without a per-DOM network."""
        tokens, dom = (context.tokens, context.dom) if isinstance(context, Context) else (context, None)
        h = self.embed(patchify(x_cond, self.patch_size)) + self.context_proj(tokens)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        out = self.out(h)  # (B, T, 2 * 2 * patch)
        shift, log_scale = out.chunk(2, dim=-1)
        shift, log_scale = unpatchify(shift, 2), unpatchify(log_scale, 2)
        if self.dom_net is None:
            return shift, log_scale
        if dom is None:
            raise ConfigError("a coupling with a per-DOM network (flow.dom_width > 0) needs the per-DOM inputs")
        summary = self.summary(h).repeat_interleave(self.patch_size, 1)  # (B, P, S): its token's summary
        dom = dom.to(x_cond.dtype).expand(x_cond.shape[0], -1, -1)
        own = torch.cat([x_cond, above_below_on_string(x_cond, self.neighbours)], 1) if self.neighbours else x_cond
        per_dom = self.dom_net(torch.cat([own.transpose(1, 2), dom.transpose(1, 2), summary], -1))  # (B, P, 4)
        d_shift, d_log_scale = per_dom.transpose(1, 2).chunk(2, dim=1)
        return shift + d_shift, log_scale + d_log_scale


class AffineCoupling(nn.Module):
    """y = x where mask is False; y = x * exp(s) + t where True, with s = b * tanh(s_raw / b).

    s and t come from the `Conditioner` applied to the untransformed part x * ~mask and the context;
    bounding s by b = scale_bound keeps the map well conditioned early in training.
    """

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module, scale_bound: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())  # (2, P), 1 = transformed
        self.conditioner = conditioner
        self.scale_bound = scale_bound

    def _params(self, x_cond: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = (t.to(x_cond.dtype) for t in self.conditioner(x_cond, context))  # fp32 log-dets under autocast
        log_scale = self.scale_bound * torch.tanh(raw / self.scale_bound)
        return shift * self.mask, log_scale * self.mask

    def forward(self, x: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._params(x * (1 - self.mask), context)
        return x * torch.exp(log_scale) + shift, log_scale.sum((1, 2))

    def inverse(self, y: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._params(y * (1 - self.mask), context)
        return (y - shift) * torch.exp(-log_scale), -log_scale.sum((1, 2))


class ContextEncoder(nn.Module):
    """Per-DOM inputs (B, D, P) and a label vector (B, L) -> context tokens (B, T, H): per-token embedding
    of the per-DOM inputs plus a label embedding added to every token. D = 3 (geometry), L = 6 (labels)
    for conditioning 'labels'; with 'physics' the per-DOM light geometry and the physics label features."""

    def __init__(self, hidden: int, patch_size: int, dom_inputs: int = GEOMETRY_CHANNELS,
                 label_dim: int = LABEL_DIM) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.geometry = nn.Linear(dom_inputs * patch_size, hidden)
        self.labels = nn.Sequential(nn.Linear(label_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, labels: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        return self.geometry(patchify(geometry, self.patch_size)) + self.labels(labels).unsqueeze(1)


LATERAL_STRINGS = 6  # the hit head reads the DOM at the nearest depth on this many nearest strings (a hex ring)
CLUMP_STRINGS = 10  # a training mask's clump of strings: a string and up to this many of its nearest
HIT_ROUNDS = 8  # rounds of explicit hit sampling (`ConditionalFlow.sample_hits`)


def nearest_strings(positions: torch.Tensor, segment: int, k: int) -> torch.Tensor:
    """Indices (S, k) of the k strings nearest to each string (itself excluded), nearest first, by the
    horizontal distance in metres of the strings' mean positions; positions (3, P) in metres, DOMs ordered
    string by string, segment DOMs per string."""
    n = positions.shape[-1] // segment
    centres = positions[:2].double().reshape(2, n, segment).mean(-1).T  # (S, 2)
    dist = torch.cdist(centres, centres) + torch.eye(n, device=positions.device, dtype=centres.dtype) * 1e12
    return dist.topk(min(k, n - 1), -1, largest=False).indices


def lateral_index(positions: torch.Tensor, segment: int, k: int = LATERAL_STRINGS) -> torch.Tensor:
    """Index (k, P): for every DOM, the DOM at the nearest depth on each of its k nearest other strings
    (`nearest_strings`, nearest first); positions (3, P) in metres. Whole dead strings still see the light
    on the strings around them, at their own depth (DeepCore's DOM numbers are at other depths)."""
    p = positions.shape[-1]
    nearest = nearest_strings(positions, segment, k)  # (S, k)
    z = positions[2].double().reshape(p // segment, segment)  # (S, segment)
    depth_gap = (z[:, None, :, None] - z[nearest][:, :, None, :]).abs()  # (S, k, own DOM, other string's DOM)
    index = nearest[:, :, None] * segment + depth_gap.argmin(-1)  # (S, k, segment): DOM index on string j
    return index.permute(1, 0, 2).reshape(-1, p)


def lateral_neighbours(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values (B, C, P) -> the values of the DOMs in `lateral_index` (k, P), (B, k C, P), nearest string first."""
    b, _, p = v.shape
    return v[:, :, index].transpose(1, 2).reshape(b, -1, p)


class Neighbours(NamedTuple):
    """Neighbour indices of one detector (`ConditionalFlow.neighbours`): strings (S, CLUMP_STRINGS) the nearest
    strings of each string, nearest first; lateral (LATERAL_STRINGS, P) `lateral_index`, or None with too
    few strings for it."""

    strings: torch.Tensor
    lateral: torch.Tensor | None


class HitPrediction(NamedTuple):
    """What the hit head says of every DOM given the observed ones: logits of P(hit) (B, P), and for a hit
    the mean (B, 2, P) and log std (B, 2, P) of a normal density of its normalized npe and time."""

    logits: torch.Tensor
    mean: torch.Tensor
    log_std: torch.Tensor


LOG_STD_RANGE = (-4.0, 2.0)  # the hit head's value log std, normalized units (time: ~40 ns .. 15 us)


class HitHead(nn.Module):
    """The hurdle part of the flow: P(hit) at every DOM given the observed DOMs and, for a hit, a normal
    density of its npe and time (a `HitPrediction`).

    Each DOM is described by what was seen there, `seen`: [observed hit, observed no hit, npe and time
    of an observed hit] (all 0 where nothing was observed). The head reads, per DOM, its own, those of
    the DOMs above and below on its string and of the DOM at the nearest depth on the LATERAL_STRINGS
    nearest strings (`lateral_neighbours`), its per-DOM inputs (position, light geometry), the label vector and an 8-number summary of
    its string token after one transformer block over all strings. Trained on random masks alongside the flow
    (`ConditionalFlow.hit_loss`); flow MAP takes hit / no hit of masked DOMs from it, because the flow's
    density compares a narrow no-hit spike with a wide hit continuum and is a poor judge of that, and
    starts from and is pulled towards its values (the flow alone places a hit's time poorly).
    """

    SEEN = 4

    def __init__(self, width: int, hidden: int, heads: int, patch_size: int, segment: int, dom_inputs: int,
                 label_dim: int) -> None:
        super().__init__()
        self.patch_size, self.segment = patch_size, segment
        self.context = ContextEncoder(hidden, patch_size, dom_inputs, label_dim)
        self.embed = nn.Linear(self.SEEN * patch_size, hidden)
        self.block = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.summary = nn.Linear(hidden, TOKEN_SUMMARY)
        inputs = self.SEEN * (3 + LATERAL_STRINGS) + dom_inputs + label_dim + TOKEN_SUMMARY
        self.mlp = nn.Sequential(nn.Linear(inputs, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 5))

    def forward(self, x: torch.Tensor, hit: torch.Tensor, observed: torch.Tensor, label_vec: torch.Tensor,
                dom: torch.Tensor, lateral: torch.Tensor | None, npe_prior: torch.Tensor | None = None
                ) -> HitPrediction:
        """x (B, 2, P) normalized (the flow's space), hit (B, P) bool (read only where observed), observed (B, P)
        bool, label_vec (B, L), dom (B, D, P) per-DOM inputs, lateral: `lateral_index` (k, P), or None with
        too few strings (zeros then), npe_prior (B, P): a normalized npe the head's npe mean is a correction
        to (None: 0) -> `HitPrediction`."""
        seen_hit = (observed & hit).to(x.dtype).unsqueeze(1)
        seen_nohit = (observed & ~hit).to(x.dtype).unsqueeze(1)
        seen = torch.cat([seen_hit, seen_nohit, x * seen_hit], 1)  # (B, 4, P)
        h = self.block(self.embed(patchify(seen, self.patch_size)) + self.context(label_vec, dom))
        summary = self.summary(h).repeat_interleave(self.patch_size, 1)  # (B, P, S)
        near = [above_below_on_string(seen, self.segment)]
        if lateral is not None:
            near.append(lateral_neighbours(seen, lateral))
        else:  # too few strings: zeros keep the input width
            near.append(seen.new_zeros(seen.shape[0], self.SEEN * LATERAL_STRINGS, seen.shape[-1]))
        labels = label_vec.to(x.dtype).unsqueeze(-1).expand(-1, -1, x.shape[-1])  # energy sets how far light goes
        per_dom = torch.cat([seen, *near, dom.to(x.dtype), labels], 1).transpose(1, 2)
        out = self.mlp(torch.cat([per_dom, summary], -1)).transpose(1, 2)  # (B, 5, P)
        mean = out[:, 1:3]
        if npe_prior is not None:  # the npe channel is a correction to the prior; time stays as predicted
            mean = mean + torch.stack([npe_prior, torch.zeros_like(npe_prior)], 1)
        return HitPrediction(out[:, 0], mean, out[:, 3:5].clamp(*LOG_STD_RANGE))


# --- the flow ---------------------------------------------------------------------------------------
class ConditionalFlow(NormalizationMetadata):
    """Conditional flow p(x | labels, geometry) over events x (B, 2, P) in normalized space.

    Steps: [ActNorm (per channel), AffineCoupling(mask kind i mod 6)] x cfg.num_couplings.
    cfg.conditioning 'physics' adds every DOM's light geometry for the labels (distance to the track and
    vertex, expected direct arrival time: `genesis.models.physics.dom_features`, computed from the
    normalized labels and geometry with the model's own normalization metadata) to the context;
    cfg.dom_width > 0 gives every coupling a per-DOM network that reads them DOM by DOM.
    """

    def __init__(self, cfg: FlowConfig, n_doms: int, normalization: Normalization) -> None:
        super().__init__()
        if n_doms % cfg.patch_size:
            raise ConfigError(f"flow.patch_size ({cfg.patch_size}) must divide the number of DOMs ({n_doms})")
        if cfg.hidden_size % cfg.num_heads:
            raise ConfigError(f"flow.num_heads ({cfg.num_heads}) must divide flow.hidden_size ({cfg.hidden_size})")
        self.config, self.n_doms = cfg, n_doms
        self.init_normalization(normalization)
        # Even/odd and halves are counted along strings; without whole strings, along tokens.
        segment = DOMS_PER_STRING if n_doms % DOMS_PER_STRING == 0 else cfg.patch_size
        kinds = [k for k in MASK_KINDS if segment >= 2 or k in ("time", "npe")]
        self.mask_kinds = [kinds[i % len(kinds)] for i in range(cfg.num_couplings)]
        self.physics = cfg.conditioning == "physics"
        if cfg.light_feature and not self.physics:
            raise ConfigError("flow.light_feature needs flow.conditioning: physics (it is a per-DOM physics input)")
        dom_inputs = GEOMETRY_CHANNELS + (physics.DOM_FEATURES + physics.LIGHT_FEATURES * cfg.light_feature
                                          if self.physics else 0)
        if cfg.dom_neighbours and not cfg.dom_width:
            raise ConfigError("flow.dom_neighbours needs the per-DOM networks: set flow.dom_width > 0")
        if cfg.hit_head and segment < 2:
            raise ConfigError("flow.hit_head needs strings of at least 2 DOMs (flow.patch_size >= 2)")
        self.segment = segment
        neighbours = segment if cfg.dom_neighbours else 0
        label_dim = physics.LABEL_FEATURES if self.physics else LABEL_DIM
        self.context = ContextEncoder(cfg.hidden_size, cfg.patch_size, dom_inputs, label_dim)
        layers: list[nn.Module] = []
        for kind in self.mask_kinds:
            cond = Conditioner(cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.patch_size, dom_inputs, cfg.dom_width,
                               neighbours)
            layers += [ActNorm(n_doms), AffineCoupling(coupling_mask(kind, n_doms, segment), cond, cfg.scale_bound)]
        self.transforms = nn.ModuleList(layers)
        self.hit_head = (HitHead(cfg.hit_head, cfg.hidden_size, cfg.num_heads, cfg.patch_size, segment, dom_inputs,
                                 label_dim) if cfg.hit_head else None)
        self._neighbour_cache: tuple[torch.Tensor, int, Neighbours] | None = None  # (geometry, its version, indices)

    @property
    def hit_representation(self) -> bool:
        """Whether the data are in the 'hit' representation (3 channels [hit, npe, time], see
        genesis.data.normalization); the flow itself always models 2 channels (`to_flow_space`)."""
        return self._transforms["representation"] == "hit"

    def _inputs(self, labels: torch.Tensor, geometry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized labels (B, 6) and geometry (3, P) or (B, 3, P) -> (label vector (B, L), per-DOM inputs
        (B, D, P)): the labels and geometry themselves, or with conditioning 'physics' their light geometry."""
        if geometry.dim() == 2:
            geometry = geometry.unsqueeze(0)
        geometry = geometry.to(labels.dtype).expand(labels.shape[0], 3, self.n_doms)
        if not self.physics:
            return labels, geometry
        phys = physics.physical_labels(labels, self.label_offsets, self.label_scales,
                                       self._transforms["energy_transform"] == "log10")
        positions = geometry.float() * self.affine_scales[2:, None].float() + self.affine_offsets[2:, None].float()
        feats = physics.dom_features(phys, positions.transpose(1, 2), self._transforms["refractive_index"],
                                     light=self.config.light_feature).to(labels.dtype)
        return physics.label_features(labels, phys), torch.cat([geometry, feats], 1)

    def _context(self, labels: torch.Tensor, geometry: torch.Tensor) -> Context:
        """Normalized labels (B, 6) and geometry (3, P) or (B, 3, P) -> `Context`."""
        label_vec, dom = self._inputs(labels, geometry)
        return Context(self.context(label_vec, dom), dom if self.config.dom_width else None)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, geometry: torch.Tensor,
                hit_inputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> Pair | tuple[torch.Tensor, ...]:
        """x (B, 2, P) -> z (B, 2, P), log|det dz/dx| (B,). With hit_inputs = (events (B, 2, P), observed
        (B, P)) also the hit head's `HitPrediction` (`predict_hits`), in the same call so that a
        DistributedDataParallel wrapper sees every parameter used in its one forward."""
        context = self._context(labels, geometry)
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, logdet = t(x, context)
            total = total + logdet
        if hit_inputs is not None:
            return x, total, self.predict_hits(*hit_inputs, labels, geometry)
        return x, total

    def inverse(self, z: torch.Tensor, labels: torch.Tensor, geometry: torch.Tensor) -> Pair:
        """z (B, 2, P) -> x (B, 2, P), log|det dx/dz| (B,)."""
        context = self._context(labels, geometry)
        total = z.new_zeros(z.shape[0])
        for t in reversed(self.transforms):
            z, logdet = t.inverse(z, context)
            total = total + logdet
        return z, total

    def log_prob(self, x: torch.Tensor, labels: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """log p(x | labels, geometry) (B,) in nats, standard normal base; x (B, C, P) in the data's
        representation (`to_flow_space`)."""
        z, logdet = self(self.to_flow_space(x), labels, geometry)
        return self.base_log_prob(z) + logdet

    @staticmethod
    def base_log_prob(z: torch.Tensor) -> torch.Tensor:
        """Standard normal log density of z (B, 2, P) summed per event (B,)."""
        return -0.5 * (z**2).sum((1, 2)) - 0.5 * z[0].numel() * math.log(2 * math.pi)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, geometry: torch.Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0, values: str = "head", rounds: int = HIT_ROUNDS) -> torch.Tensor:
        """Normalized events (B, C, P) in the data's representation for labels (B, 6); temperature scales the
        noise (< 1: more typical).

        With a hit head, the hurdle model draws every DOM's hit / no hit explicitly (`sample_hits`); DOMs
        drawn without a hit get exactly the no-hit value, hit DOMs their npe (at least cfg.hit_threshold pe)
        and time from the head's density (values 'head') or from the flow's sample (values 'flow').
        Without a head, the flow's sample as it is (legacy: sampling decides hits by the npe threshold)."""
        if self.hit_head is None:
            z = torch.randn(labels.shape[0], 2, self.n_doms, generator=generator, device=labels.device,
                            dtype=labels.dtype)
            x = self.inverse(z * temperature, labels, geometry)[0]
            return self.to_data_space(x, self._npe_physical(x[:, 0]) >= self.config.hit_threshold)
        if values not in ("head", "flow"):
            raise ConfigError(f"unknown source of hit values {values!r}; use 'head' or 'flow'")
        x, hit = self.sample_hits(labels, geometry, generator, temperature, rounds)
        if values == "flow":
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            flow_x = self.inverse(z * temperature, labels, geometry)[0]
            flow_x = torch.stack([torch.maximum(flow_x[:, 0], self._npe_floor().to(x)), flow_x[:, 1]], 1)
            x = torch.where(hit.unsqueeze(1), flow_x, x)
        return self.to_data_space(x, hit)

    @torch.no_grad()
    def sample_hits(self, labels: torch.Tensor, geometry: torch.Tensor, generator: torch.Generator | None = None,
                    temperature: float = 1.0, rounds: int = HIT_ROUNDS) -> tuple[torch.Tensor, torch.Tensor]:
        """The hurdle part of generation: (x (B, 2, P) in the flow's space, hit (B, P) bool) for labels (B, 6).

        Nothing is observed at first; in each of `rounds` rounds the hit head, given the DOMs drawn so far,
        gives P(hit) and the density of a hit's values for the others, and a random 1/rounds of all DOMs is
        drawn from it: hit ~ Bernoulli(P(hit)), a hit's npe and time ~ the head's normal (npe at least
        cfg.hit_threshold pe). Later rounds see the hits of earlier ones (an any-order autoregressive model
        over groups of DOMs), so an event's DOMs light up together; the head is trained for this on masks that
        hide a random share of all DOMs (`training_masks`). DOMs without a hit hold exactly `nohit_value`."""
        if self.hit_head is None:
            raise ConfigError("drawing hits needs a hit head (flow.hit_head > 0)")
        b, p = labels.shape[0], self.n_doms
        label_vec, dom = self._inputs(labels, geometry)
        lateral, prior = self.neighbours(geometry).lateral, self._npe_prior(dom)
        rand = lambda *shape: torch.rand(shape, generator=generator, device=labels.device, dtype=labels.dtype)  # noqa: E731
        group = rand(b, p).argsort(1).argsort(1) * rounds // p  # (B, P): the round each DOM is drawn in
        x = self.nohit_value().to(labels).reshape(1, 2, 1).expand(b, 2, p).clone()
        hit = torch.zeros(b, p, dtype=torch.bool, device=labels.device)
        floor = self._npe_floor().to(labels)
        for r in range(rounds):
            pred = self.hit_head(x, hit, group < r, label_vec, dom, lateral, prior)
            now = group == r
            drawn = now & (rand(b, p) < torch.sigmoid(pred.logits))
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            values = pred.mean + temperature * torch.exp(pred.log_std) * noise
            values = torch.stack([torch.maximum(values[:, 0], floor), values[:, 1]], 1)
            x = torch.where(drawn.unsqueeze(1), values, x)
            hit = hit | drawn
        return x, hit

    def _npe_floor(self) -> torch.Tensor:
        """Normalized npe of cfg.hit_threshold pe (float64 scalar): a drawn hit's npe is never below it."""
        threshold = torch.tensor(self.config.hit_threshold, dtype=torch.float64, device=self.affine_offsets.device)
        return self._npe_normalized(threshold)

    def to_flow_space(self, x: torch.Tensor) -> torch.Tensor:
        """Events (B, C, P) in the data's representation -> (B, 2, P) [npe, time], the space the flow models.
        'legacy' is that space already; 'hit' [hit, npe, time] becomes npe and time where hit > 0 and
        `nohit_value` elsewhere (the hit indicator is implied by the npe: hits lie above the no-hit npe).
        Events already with 2 channels are returned as they are."""
        if x.shape[1] == 2:
            return x
        if not self.hit_representation or x.shape[1] != 3:
            raise ConfigError(f"events with {x.shape[1]} channels do not match this flow's "
                              f"'{self._transforms['representation']}' representation")
        nohit = self.nohit_value().to(x).reshape(1, 2, 1)
        return torch.where(x[:, :1] > 0, x[:, 1:], nohit)

    def to_data_space(self, x: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
        """(B, 2, P) in the flow's space and hit (B, P) bool -> the data's representation: 'legacy' as it is
        (`genesis.sampling` decides hits from the npe), 'hit' [+1 / -1, npe, time] with 0 where not hit."""
        if not self.hit_representation:
            return x
        h = hit.unsqueeze(1)
        return torch.cat([torch.where(h, 1.0, -1.0).to(x), torch.where(h, x, torch.zeros_like(x))], 1)

    def nohit_value(self) -> torch.Tensor:
        """(2,) float64 [npe, time] of a DOM without a hit in the flow's space, on the model's device, computed
        from the normalization metadata (no host sync): 'legacy', the normalized values of npe 0 and time 0;
        'hit', the normalized npe 0 and time 0 (the representation's neutral value: a time measured from
        the direct light has no far-away sentinel, and the npe alone separates no hit from hits)."""
        zero = torch.zeros((), dtype=torch.float64, device=self.affine_offsets.device)
        t = self._transforms
        time = zero if self.hit_representation else (
            forward_time(zero, t["time_transform"], t["time_center_ns"], t["time_width_ns"]) - self.affine_offsets[1]
        ) / self.affine_scales[1]
        return torch.stack([(forward_npe(zero, t["npe_transform"]) - self.affine_offsets[0]) / self.affine_scales[0], time])

    def point_masses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bool (B, P) masks of the point masses of normalized events x (B, C, P) (`to_flow_space`): no-hit
        DOMs (npe at the no-hit value, within NOHIT_TOLERANCE) and hit DOMs whose physical npe is an integer count."""
        x = self.to_flow_space(x)
        v = self.nohit_value().to(x.dtype)
        no_hit = (x[:, 0] - v[0]).abs() <= NOHIT_TOLERANCE
        npe = self._npe_physical(x[:, 0])
        count = ~no_hit & ((npe - npe.round()).abs() <= COUNT_TOLERANCE * npe.abs().clamp_min(1.0))
        return no_hit, count

    def _npe_physical(self, npe_n: torch.Tensor) -> torch.Tensor:
        """Normalized npe (B, P) -> photoelectrons (B, P), float64."""
        y = npe_n.double() * self.affine_scales[0] + self.affine_offsets[0]
        return inverse_npe(y, self._transforms["npe_transform"])

    def _npe_normalized(self, npe: torch.Tensor) -> torch.Tensor:
        """Photoelectrons (B, P) float64 -> normalized npe (B, P), float64."""
        return (forward_npe(npe, self._transforms["npe_transform"]) - self.affine_offsets[0]) / self.affine_scales[0]

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalized events x (B, C, P) -> (B, 2, P) in the flow's space (`to_flow_space`) with their point
        masses spread (see the module doc); hit times and non-integer hit charges come back unchanged. Width
        cfg.dequant_noise = 0 turns it off."""
        x = self.to_flow_space(x)
        width = self.config.dequant_noise
        if width <= 0:
            return x
        no_hit, count = self.point_masses(x)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        npe = torch.where(no_hit, x[:, 0] - u[:, 0] * width, x[:, 0])
        spread = self._npe_normalized(self._npe_physical(x[:, 0]) + u[:, 0].double() - 0.5).to(x.dtype)
        npe = torch.where(count, spread, npe)
        time = torch.where(no_hit, x[:, 1] + (u[:, 1] - 0.5) * width, x[:, 1])
        return torch.stack([npe, time], 1)

    def predict_hits(self, x: torch.Tensor, observed: torch.Tensor, labels: torch.Tensor, geometry: torch.Tensor
                     ) -> HitPrediction:
        """The hit head's `HitPrediction` (in the flow's space) for normalized events x (B, C, P) of which the
        DOMs where observed (B, P) or (P,) is True are known; the other values are never read."""
        if self.hit_head is None:
            raise ConfigError("this flow has no hit head (flow.hit_head = 0)")
        x = self.to_flow_space(x)
        label_vec, dom = self._inputs(labels, geometry)
        hit = ~self.point_masses(x)[0]
        return self.hit_head(x, hit, observed.expand(x.shape[0], self.n_doms), label_vec, dom,
                             self.neighbours(geometry).lateral, self._npe_prior(dom))

    def _npe_prior(self, dom: torch.Tensor) -> torch.Tensor | None:
        """With flow.light_feature, the normalized npe of every DOM's expected charge (at least 1 pe, a hit's
        least) from the per-DOM inputs dom (B, D, P), whose last row is `physics.expected_light`: the hit head's
        npe is a correction to it, so a hit's charge follows the energy from the first step (with the feature
        as an input alone, 1000 steps of 32 gave a charge-energy slope of 0.52 against the simulator's 0.85)."""
        if not self.config.light_feature:
            return None
        pe = (10 ** (3 * dom[:, -1].double())).clamp_min(1.0)
        return self._npe_normalized(pe).to(dom.dtype)

    def neighbours(self, geometry: torch.Tensor) -> Neighbours:
        """The `Neighbours` of normalized geometry (3, P) or (B, 3, P) (the first event's detector), by physical
        distance (the normalization scales x and y differently); computed once per geometry tensor and kept
        while the same, unmodified tensor comes back (the trainer's and the samplers' do)."""
        cache = self._neighbour_cache
        if cache is not None and cache[0] is geometry and cache[1] == geometry._version:
            return cache[2]
        g = (geometry if geometry.dim() == 2 else geometry[0]).double()
        positions = g * self.affine_scales[2:, None].to(g) + self.affine_offsets[2:, None].to(g)  # (3, P) metres
        strings = self.n_doms // self.segment
        found = Neighbours(nearest_strings(positions, self.segment, CLUMP_STRINGS),
                           lateral_index(positions, self.segment) if strings > LATERAL_STRINGS else None)
        self._neighbour_cache = (geometry, geometry._version, found)
        return found

    def training_masks(self, geometry: torch.Tensor, batch: int, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Random masks (B, P) bool (True = hidden) for the hit head. Half are those generation meets
        (`sample_hits`): all DOMs hidden (a quarter of all masks), or a random share (uniform in 0..1) of them;
        a sixth each are the gaps inpainting meets: random DOMs (2-30%), scattered whole strings (2-15% of
        them), and a clump of 2-11 adjacent strings (a random string and its nearest ones: DeepCore, a
        sphere). geometry (3, P) normalized."""
        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=geometry.device)

        strings = self.n_doms // self.segment
        doms = rand(batch, self.n_doms) < 0.02 + 0.28 * rand(batch, 1)
        scattered = rand(batch, strings) < 0.02 + 0.13 * rand(batch, 1)
        centre = (rand(batch) * strings).long().clamp_max(strings - 1)
        nearest = self.neighbours(geometry).strings[centre]  # (B, CLUMP_STRINGS)
        size = (1 + rand(batch, 1) * nearest.shape[1]).long()  # 1..10 neighbours
        clump = torch.zeros(batch, strings, dtype=torch.bool, device=geometry.device)
        clump[torch.arange(batch, device=geometry.device), centre] = True
        clump.scatter_(1, nearest, torch.arange(nearest.shape[1], device=geometry.device) < size)
        # 1/4 of all masks hide everything: generation's first round, the only one that learns how the hits
        # follow the energy without seeing any (at 1/8 the head drew as many hits at 1 TeV as at 1 PeV)
        share = torch.where(rand(batch, 1) < 0.5, 1.0, rand(batch, 1))
        generation = rand(batch, self.n_doms) < share
        kind = rand(batch, 1)
        whole = torch.where(kind < 2 / 3, scattered, clump).repeat_interleave(self.segment, 1)
        inpainting = torch.where(kind < 1 / 3, doms, whole)
        return torch.where(rand(batch, 1) < 0.5, generation, inpainting)

    def hit_loss(self, pred: HitPrediction, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Mean per event (scalar, nats) of the hit head's negative log-likelihood of events x (B, 2, P) at
        the hidden DOMs (B, P): the binary cross-entropy of hit / no hit at every hidden DOM plus the normal
        NLL of npe and time at the hidden hits, -log p(hidden DOMs | observed DOMs) of the per-DOM model."""
        hit = ~self.point_masses(x)[0]
        bce = nn.functional.binary_cross_entropy_with_logits(pred.logits, hit.to(x.dtype), reduction="none")
        values = 0.5 * ((x - pred.mean) * torch.exp(-pred.log_std)) ** 2 + pred.log_std + 0.5 * math.log(2 * math.pi)
        return (bce * hidden + values.sum(1) * (hidden & hit)).sum(1).mean()

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor, geometry: torch.Tensor,
                      generator: torch.Generator | None = None, forward: nn.Module | None = None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean NLL per event (scalar, nats) of the dequantized batch, plus with a hit head its `hit_loss`
        (trained together), and detached {'nll' (the flow's alone), 'bits_per_dim' (of 'nll'), 'hit_nll' (with
        a hit head)}: the flow's NLL is logged and chosen on apart from the head's, so that runs with and
        without a head compare.

        forward: the module whose forward() maps x -> (z, logdet): this flow, or a DistributedDataParallel
        wrapper of it (only DDP's forward synchronises gradients across ranks)."""
        x = self.to_flow_space(x)  # (B, 2, P)
        hidden = None if self.hit_head is None else self.training_masks(geometry, x.shape[0], generator)
        hit_inputs = None if hidden is None else (x, ~hidden)
        z, logdet, *pred = (forward or self)(self.dequantize(x, generator), labels, geometry, hit_inputs=hit_inputs)
        nll = -self.base_log_prob(z).add(logdet).mean()
        bpd = nll / (2 * self.n_doms * math.log(2))
        extra = {"nll": nll.detach(), "bits_per_dim": bpd.detach()}
        if hidden is None:
            return nll, extra
        hit_nll = self.hit_loss(pred[0], x, hidden)
        return nll + hit_nll, {**extra, "hit_nll": hit_nll.detach()}
