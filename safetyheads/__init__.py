"""safetyheads: attention-head attribution for LLM safety (Zhou et al., ICLR 2025), on any HF causal LM."""

from ._version import __version__
from .ablation import AblationSpec, ablate
from .arch import ARCHITECTURES, SUPPORTED_FAMILIES, geometry, get_arch
from .errors import SafetyheadsError
from .generation import DecodingSpec, generate_responses
from .heads import HeadRef, all_heads, parse_heads
from .models import DEFAULT_MODEL, load_model
from .ships import kl_from_logits, ships_for_ids, ships_scores, top_heads
from .surgery import export_ablated
# Not re-exported as `sahara`: that name is the submodule (safetyheads.sahara.sahara is the function).
from .sahara import SaharaResult
from .subspace import generalized_ships
from .activations import last_token_states

__all__ = [
    "__version__", "AblationSpec", "ablate", "ARCHITECTURES", "SUPPORTED_FAMILIES", "geometry", "get_arch",
    "SafetyheadsError", "HeadRef", "all_heads", "parse_heads", "DEFAULT_MODEL", "load_model",
    "kl_from_logits", "ships_for_ids", "ships_scores", "top_heads", "export_ablated",
    "DecodingSpec", "generate_responses", "SaharaResult", "generalized_ships", "last_token_states",
]
