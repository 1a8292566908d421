"""widthscan: train one network family at many widths and seeds; measure how consistent they are."""

from widthscan import models, parametrization, train
from widthscan._version import __version__
from widthscan.parametrization import parametrize
from widthscan.train import Ensemble

__all__ = ["Ensemble", "__version__", "models", "parametrization", "parametrize", "train"]
