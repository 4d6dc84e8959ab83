"""Plain `nn.Module` models. The enhancement models take and return waveforms shaped
(batch, time); the transducer takes a batch dict (models/transducer.py). None of them knows
about Hydra; `conf/model/*.yaml` names them by `_target_`."""

from models.conv import ConvUNet
from models.lstm import LSTMEnhancer, LSTMStack
from models.transducer import Transducer

__all__ = ["ConvUNet", "LSTMEnhancer", "LSTMStack", "Transducer"]
