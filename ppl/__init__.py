"""ppl: a probabilistic programming language embedded in Python, on torch.

    >>> from ppl import model, sample, plate, infer
"""

from . import handlers
from .errors import DuplicateSiteError, ModelError, ShapeError
from .infer import InferenceMethod, infer
from .model import Model, model
from .modules import module
from .params import ParamStore, clear_params, get_param
from .passes import _ops as _pass_ops  # noqa: F401  (registers the ops passes emit, so their text parses)
from .predictive import predictive
from .primitives import deterministic, factor, param, plate, sample
from .runtime import Message, Messenger
from .scan import scan
from .subsample import subsample
from .trace import Site, Trace
from .validation import set_validation

__all__ = [
    "model", "Model", "sample", "param", "plate", "factor", "deterministic", "scan", "infer",
    "predictive",
    "InferenceMethod", "handlers", "Trace", "Site", "Message", "Messenger", "ModelError",
    "ShapeError", "DuplicateSiteError", "set_validation", "get_param", "clear_params",
    "ParamStore", "module", "subsample",
]
__version__ = "0.1.0"
