"""Plain `nn.Module` models. They take and return waveforms shaped (batch, time) and know
nothing about Hydra; `conf/model/*.yaml` names them by `_target_`."""

from models.conv import ConvUNet
from models.lstm import LSTMMask

__all__ = ["ConvUNet", "LSTMMask"]
