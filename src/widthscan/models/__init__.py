"""Width-parameterized model families; any ``width -> nn.Module`` factory works the same way."""

from widthscan.models.mlp import MLP, mlp
from widthscan.models.registry import (
    factory,
    family,
    names,
    register,
)
from widthscan.models.resnet import ResNet18, resnet18
from widthscan.models.transformer import Transformer, transformer

__all__ = ["MLP", "ResNet18", "Transformer", "factory", "family", "mlp", "names", "register",
           "resnet18", "transformer"]
