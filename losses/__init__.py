"""Plain `nn.Module` losses. Every loss the engine sees is a `Composite` of named terms with
weights from config, so an ablation is a config change and each term is logged by name."""

from losses.composite import Composite
from losses.level import ClippingPenalty, LoudnessNormalized
from losses.spectral import CompressedSpectralLoss, MultiResolutionSTFTLoss
from losses.transducer import RNNTLoss
from losses.waveform import L1Loss, SISDRLoss

__all__ = [
    "ClippingPenalty",
    "Composite",
    "CompressedSpectralLoss",
    "L1Loss",
    "LoudnessNormalized",
    "MultiResolutionSTFTLoss",
    "RNNTLoss",
    "SISDRLoss",
]
