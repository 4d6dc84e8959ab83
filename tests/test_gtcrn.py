"""The GTCRN-style enhancer (models/gtcrn.py) against its design: GTCRN's size and cost
(23.67 k parameters, 33.0 M MACs per second, as its authors count them with ptflops), its
causality, its ERB filters, and its streaming form against the whole-utterance model."""

from __future__ import annotations

import pytest
import torch

from models.gtcrn import GTCRN, FixedLinear, StreamingGTCRN, erb_matrix
from models.streaming import run


def test_its_size_is_the_designs():
    model = GTCRN()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == pytest.approx(23_670, rel=0.10)
    assert not any(k.startswith(("erb", "ierb")) for k in model.state_dict())  # fixed filters are not saved


def test_its_cost_per_second_is_the_designs_counted_as_its_authors_count():
    ptflops = pytest.importorskip("ptflops", reason="ptflops is in the test extras")

    def fixed_linear(module, inputs, output):  # the ERB filters: nn.Linear in the reference
        module.__flops__ += int(output.numel() * module.weight.shape[1])

    macs, params = ptflops.get_model_complexity_info(
        GTCRN().eval(), (16000,), as_strings=False, print_per_layer_stat=False, verbose=False,
        backend="pytorch", custom_modules_hooks={FixedLinear: fixed_linear},
    )  # fmt: skip
    assert macs == pytest.approx(33.0e6, rel=0.10) and params == pytest.approx(23_670, rel=0.10)


def test_the_output_never_depends_on_future_input():
    model = GTCRN().eval()
    g = torch.Generator().manual_seed(0)
    past, future_a, future_b = (torch.randn(1, 16000, generator=g) for _ in range(3))
    with torch.no_grad():
        a = model(torch.cat([past, future_a], dim=1))
        b = model(torch.cat([past, future_b], dim=1))
    # the last two frames before the change overlap it (512-sample frames, hop 256)
    assert torch.equal(a[:, : 16000 - 512], b[:, : 16000 - 512])
    assert not torch.allclose(a[:, 16000:], b[:, 16000:])
    assert a.shape == (1, 32000) and torch.isfinite(a).all()


def test_the_erb_filters_cover_the_upper_band_and_the_shape_is_checked():
    filters = erb_matrix(65, 64, 512, 16000)
    assert filters.shape == (64, 192) and bool((filters >= 0).all())
    coverage = filters.sum(0)  # neighbouring triangles add up to one between their centres
    assert coverage[20:].min().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="model.low_bins"):
        GTCRN(low_bins=0)
    with pytest.raises(ValueError, match="multiple of 4 .two halvings"):
        GTCRN(erb_bands=63)
    with pytest.raises(ValueError, match="model.hidden"):
        GTCRN(hidden=6)


def model_with_statistics() -> GTCRN:
    """A GTCRN in eval mode whose batch norms have running statistics other than (0, 1), as a
    trained one has: the stream must use them as the whole-utterance model does."""
    torch.manual_seed(0)
    model = GTCRN().eval()
    g = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
    return model


def test_the_stream_reproduces_the_whole_utterance_model():
    """Hop by hop with carried state: the offline output n_fft - hop samples later, once the
    offline model's centred, reflect-padded first frame is out of the way (the signal starts
    with a frame of silence, whose reflection is silence too); each batch item on its own."""
    model = model_with_statistics()
    step = StreamingGTCRN(model, 16000)
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.pad(torch.randn(2, 12000, generator=g) * torch.tensor([[0.3], [0.01]]), (512, 0))
    with torch.no_grad():
        offline = model(x)
    streamed = run(step, x, step.initial_state(2), step.hop)
    delay, usable = 512 - 256, x.shape[-1] - 512  # the offline model's reflect-padded end differs too
    assert offline[:, :usable].abs().max() > 0.01
    torch.testing.assert_close(streamed[:, delay : delay + usable], offline[:, :usable], atol=1e-5, rtol=0)
    alone = run(step, x[1:], step.initial_state(1), step.hop)
    torch.testing.assert_close(alone, streamed[1:], atol=1e-6, rtol=0)
    names = dict(zip(step.state_names, step.initial_state(3)))
    assert names["conv"].shape == (3, 16, 2 * (1 + 2 + 5) * 2, 33)  # six blocks: 2 x dilation past frames each
    assert names["attention"].shape == (3, 6, 16) and names["grnn"].shape == (3, 2, 33, 16)
    assert step.latency()["algorithmic_ms"] == 32.0
