"""The loss library: every loss of the study and the classic ones, exact to ../shared/spec/losses.md.

    from imbaseg.losses import get_loss
    loss = get_loss("boundary-dou")  # or "dice+bce", "boundary-gaussian(sigma=4)+0.5*dou"
    value = loss(logits, target, dist_fg=dist_fg)  # (B,1,H,W) logits, {0,1} target; extras optional

Every loss returns a float32 scalar (float64 for float64 logits, for gradcheck), computes its sums in
float32 under autocast, has ``distance_inputs`` (the precomputed maps it can take as extras, see
``distance_maps``) and ``last_terms`` (per-term values of compound losses).
"""

from imbaseg.losses._registry import LOSSES, build_loss, coerce_params, get_loss, list_losses
from imbaseg.losses.balanced import boundary_gaussian_weight_map
from imbaseg.losses.compound import CompoundLoss, parse_loss_spec
from imbaseg.losses.distance import COUNTS_KEY, DISTANCE_KEYS, EMPTY_DISTANCE, distance_maps, edt, gauss_key

__all__ = [
    "LOSSES",
    "COUNTS_KEY",
    "DISTANCE_KEYS",
    "EMPTY_DISTANCE",
    "CompoundLoss",
    "boundary_gaussian_weight_map",
    "build_loss",
    "coerce_params",
    "distance_maps",
    "edt",
    "gauss_key",
    "get_loss",
    "list_losses",
    "parse_loss_spec",
]
