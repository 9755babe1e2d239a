"""Error types raised by ppl. Messages name the site, shapes, plate, pass, and the fix."""


class ModelError(ValueError):
    """A model was given input it cannot run with (bad distribution, value, or shape)."""


class ShapeError(ModelError):
    """A site's shape does not broadcast with the plates it sits in."""


class DuplicateSiteError(ModelError):
    """Two sites in one run share an address."""
