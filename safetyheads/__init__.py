"""safetyheads: attention-head attribution for LLM safety (Zhou et al., ICLR 2025), on any HF causal LM."""

from ._version import __version__
from .ablation import AblationSpec, ablate  # noqa: E402
from .arch import ARCHITECTURES, SUPPORTED_FAMILIES, geometry, get_arch  # noqa: E402
from .errors import SafetyheadsError  # noqa: E402
from .generation import DecodingSpec, generate_responses  # noqa: E402
from .heads import HeadRef, all_heads, parse_heads  # noqa: E402
from .models import DEFAULT_MODEL, load_model  # noqa: E402
from .ships import kl_from_logits, ships_for_ids, ships_scores, top_heads  # noqa: E402
from .surgery import export_ablated  # noqa: E402
# Not re-exported as `sahara`: that name is the submodule (safetyheads.sahara.sahara is the function).
from .sahara import SaharaResult  # noqa: E402
from .subspace import generalized_ships  # noqa: E402
from .activations import last_token_states  # noqa: E402

__all__ = [
    "__version__", "AblationSpec", "ablate", "ARCHITECTURES", "SUPPORTED_FAMILIES", "geometry", "get_arch",
    "SafetyheadsError", "HeadRef", "all_heads", "parse_heads", "DEFAULT_MODEL", "load_model",
    "kl_from_logits", "ships_for_ids", "ships_scores", "top_heads", "export_ablated",
    "DecodingSpec", "generate_responses", "SaharaResult", "generalized_ships", "last_token_states",
]
