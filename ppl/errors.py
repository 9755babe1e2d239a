"""Error types raised by ppl. Messages name the site, shapes, plate, pass, and the fix."""


class ModelError(ValueError):
    """A model was given input it cannot run with (bad distribution, value, or shape)."""


class ShapeError(ModelError):
    """A site's shape does not broadcast with the plates it sits in."""


class DuplicateSiteError(ModelError):
    """Two sites in one run share an address."""


class OperationError(ModelError):
    """A torch operation between sites failed: the message names the operation, the model's
    source line, the random sites its inputs depend on, and the inputs' shapes and dtypes."""


def operation_error(name: str, line: str, sites: object, inputs: list[tuple[tuple, str]],
                    error: Exception) -> OperationError:
    """The :class:`OperationError` for ``error``, raised by operation ``name`` at ``line`` on
    ``inputs`` (shape, dtype) that depend on the random ``sites``. Mixed dtypes get the fix:
    torch does not promote inside ``matmul`` and friends, so the model must cast."""
    shown = ", ".join(f"{dtype}{list(shape)}" for shape, dtype in inputs) or "no tensors"
    message = (f"{name} failed at {line} on inputs {shown}"
               + (f" (computed from sites {sorted(sites)})" if sites else "")
               + f": {type(error).__name__}: {error}")
    dtypes = sorted({dtype for _, dtype in inputs if dtype.startswith("float")})
    if len(dtypes) > 1:
        message += (f". The inputs mix {' and '.join(dtypes)}: cast the data to the "
                    "parameters' dtype (x.to(torch.float32)), or give the priors float64 "
                    "parameters (torch.set_default_dtype(torch.float64))")
    return OperationError(message)
