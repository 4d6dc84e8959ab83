"""The LSTM family and the input representations: initialisation, precision, streaming,
causality, compile fallback, reconstruction, and that every variant learns."""

from __future__ import annotations

import pytest
import torch
import torchaudio.transforms as T

from models import representations as R
from models.lstm import LSTMEnhancer, LSTMStack
from tests.conftest import CPU_PRECISIONS, before_and_after_one_epoch

VARIANTS = {
    "unidirectional": dict(layers=1),
    "bidirectional": dict(layers=1, bidirectional=True),
    "stacked_dropout": dict(layers=3, dropout=0.2),
    "projected": dict(layers=2, proj_size=4),
}


def test_initialisation_sets_each_forget_gates_total_bias():
    stack = LSTMStack(6, 8, layers=2, bidirectional=True, forget_bias=1.0)
    biases = dict(stack.lstm.named_parameters())
    names = [n for n in biases if n.startswith("bias_ih")]
    assert len(names) == 4  # 2 layers x 2 directions
    for name in names:
        total = (biases[name] + biases[name.replace("_ih", "_hh")]).detach().split(8)
        assert torch.equal(total[1], torch.ones(8))  # the forget gate: exactly forget_bias
        assert not torch.equal(total[0], torch.ones(8))  # the other gates keep their random init
    fresh = LSTMStack(6, 8, forget_bias=3.0).lstm
    assert torch.equal((fresh.bias_ih_l0 + fresh.bias_hh_l0).detach()[8:16], torch.full((8,), 3.0))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("cpu_precision", sorted(CPU_PRECISIONS), indirect=True)
def test_every_variant_runs_forward_and_backward_under_each_precision(variant, cpu_precision):
    torch.manual_seed(0)
    model = LSTMEnhancer(n_fft=64, hop=32, hidden=8, **VARIANTS[variant])
    x = torch.randn(2, 800) * 0.1
    dtype = cpu_precision
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        y = model(x)
        loss = (y.float() - x).pow(2).mean()
    loss.backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_projection_sets_output_size_and_bidirectional_doubles_it():
    assert LSTMStack(5, 16, proj_size=4).output_size == 4
    assert LSTMStack(5, 16, bidirectional=True, proj_size=4).output_size == 8
    assert LSTMStack(5, 16, bidirectional=True).output_size == 32
    with pytest.raises(ValueError, match="proj_size"):
        LSTMStack(5, 16, proj_size=16)
    with pytest.raises(ValueError, match="dropout"):
        LSTMStack(5, 16, layers=1, dropout=0.1)


def test_unidirectional_stack_streams_chunk_by_chunk():
    torch.manual_seed(0)
    stack = LSTMStack(5, 8, layers=2, proj_size=3).eval()
    x = torch.randn(2, 30, 5)
    whole, _ = stack(x)
    state, pieces = None, []
    for chunk in x.split(7, dim=1):  # uneven chunks, state carried
        out, state = stack(chunk, state)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_causality_future_input_changes_past_output_only_when_bidirectional(bidirectional):
    torch.manual_seed(0)
    n_fft, hop = 64, 32
    model = LSTMEnhancer(n_fft=n_fft, hop=hop, hidden=8, layers=2, bidirectional=bidirectional).eval()
    x = torch.randn(1, 2000) * 0.1
    y = x.clone()
    cut = 1200
    y[:, cut:] += torch.randn(1, 2000 - cut) * 0.1
    # LevelNorm divides by the whole signal's RMS: compare level-free outputs
    out_x = model.rnn(model.norm(model.rep.analyse(x)[0]))[0]
    out_y = model.rnn(model.norm(model.rep.analyse(y)[0]))[0]
    past = (cut - n_fft // 2) // hop - 1  # frames whose centred window ends before the cut
    same = torch.allclose(out_x[:, :past], out_y[:, :past])
    assert same != bidirectional


def test_compile_runs_the_lstm_eagerly_between_compiled_regions():
    """Dynamo does not trace nn.LSTM: a graph break, the same numbers as eager."""
    torch.manual_seed(0)
    model = LSTMEnhancer(n_fft=64, hop=32, hidden=8).eval()
    x = torch.randn(2, 800) * 0.1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="(?i)rnn|lstm|graph break"):
        torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch._dynamo.reset()


def test_waveform_and_stft_representations_reconstruct_their_input():
    torch.manual_seed(0)
    x = torch.randn(2, 1000)
    wave = R.Waveform(64, 16)
    frames, ctx = wave.analyse(x)
    torch.testing.assert_close(wave.synthesise(torch.zeros_like(frames), ctx, 1000), x, atol=1e-5, rtol=1e-4)
    for rep in (R.STFTMask(64, 16, "magnitude"), R.STFTMask(64, 16, "complex")):
        feats, spec = rep.analyse(x)
        assert feats.shape == (2, spec.shape[1], rep.features)
        torch.testing.assert_close(rep.waveform(spec, 1000), x, atol=1e-5, rtol=1e-4)
    # a saturated gain mask passes the input through
    mag = R.STFTMask(64, 16, mask="gain")
    feats, spec = mag.analyse(x)
    torch.testing.assert_close(mag.synthesise(torch.full_like(feats, 30.0), spec, 1000), x, atol=1e-4, rtol=1e-4)


def _complex_reference(rep: R.STFTMask, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The masks as complex formulas on torchaudio's (B, bins, N) STFT: what the real
    arithmetic of `STFTMask.synthesise` must reproduce."""
    spec = T.Spectrogram(rep.stft.n_fft, hop_length=rep.stft.hop_length, power=None)(x)
    y = y.transpose(1, 2)
    if rep.mask == "gain":
        out = spec * torch.sigmoid(y)
    else:
        y, extra = y.chunk(2, dim=1) if rep.residual else (y, None)
        m = torch.complex(*y.chunk(2, dim=1))
        out = spec * m * (torch.tanh(m.abs()) / (m.abs() + 1e-8))
        if extra is not None:
            out = out + torch.complex(*extra.chunk(2, dim=1))
    return T.InverseSpectrogram(rep.stft.n_fft, hop_length=rep.stft.hop_length)(out, x.shape[-1])


@pytest.mark.parametrize("mask,residual", [("complex", False), ("complex", True), ("gain", False)])
def test_masks_in_real_arithmetic_equal_the_complex_formulas_and_their_gradients(mask, residual):
    torch.manual_seed(0)
    rep = R.STFTMask(64, 16, "magnitude", mask=mask, residual=residual)
    x = torch.randn(2, 1000)
    feats, spec = rep.analyse(x)
    y = torch.randn(2, feats.shape[1], rep.outputs, requires_grad=True)
    ours, reference = rep.synthesise(y, spec, 1000), _complex_reference(rep, x, y)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    weights = torch.randn(2, 1000)
    grad_ours = torch.autograd.grad((ours * weights).sum(), y)[0]
    grad_reference = torch.autograd.grad((reference * weights).sum(), y)[0]
    torch.testing.assert_close(grad_ours, grad_reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("residual", [False, True])
def test_the_complex_mask_has_a_finite_gradient_where_the_network_outputs_exact_zeros(residual):
    """A bf16 head gives exact zeros in both parts of some bins; torch.hypot's gradient there
    is 0/0, which ended a small bf16 LSTM run as diverged within 10 steps."""
    rep = R.STFTMask(64, 16, "magnitude", mask="complex", residual=residual)
    feats, spec = rep.analyse(torch.randn(2, 1000, generator=torch.Generator().manual_seed(0)))
    y = torch.randn(2, feats.shape[1], rep.outputs)
    y[:, :, [0, 5]] = y[:, :, [rep.bins, rep.bins + 5]] = 0  # both parts of bins 0 and 5
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(rep.synthesise(y, spec, 1000).pow(2).sum(), y)
    assert torch.isfinite(grad).all()
    # the map m -> m tanh|m| / |m| has slope 1 at m = 0: a zero mask still learns
    assert grad[:, :, 5].abs().sum() > 0


def test_complex_features_are_compressed_real_imag_of_torchaudios_stft():
    x = torch.randn(1, 800)
    rep = R.STFTMask(64, 16, features="complex", compress=0.5)
    feats, _ = rep.analyse(x)
    spec = T.Spectrogram(64, hop_length=16, power=None)(x)
    expected = spec / spec.abs().sqrt()
    torch.testing.assert_close(
        feats.transpose(1, 2), torch.cat([expected.real, expected.imag], 1), atol=1e-5, rtol=1e-4
    )


def test_logmel_is_torchaudios_mel_spectrogram():
    x = torch.randn(2, 1600)
    rep = R.LogMel(16000, 400, 160, 40)
    feats, _ = rep.analyse(x)
    expected = torch.log(T.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=40)(x) + 1e-6)
    torch.testing.assert_close(feats, expected.transpose(1, 2))
    assert rep.frames(torch.tensor([1600, 800])).tolist() == [feats.shape[1], 6]
    with pytest.raises(NotImplementedError, match="feature extractor"):
        rep.synthesise(feats, None, 1600)


def test_unknown_domain_or_mask_and_misplaced_residual_are_refused():
    with pytest.raises(ValueError, match="model.domain"):
        LSTMEnhancer(domain="mel")
    with pytest.raises(ValueError, match="model.mask"):
        LSTMEnhancer(mask="ideal")
    with pytest.raises(ValueError, match="model.residual"):
        LSTMEnhancer(mask="gain", residual=True)
    with pytest.raises(ValueError, match="model.residual"):
        LSTMEnhancer(domain="waveform", residual=True)


LEARN = [
    "trainer.epochs=1", "trainer.steps_per_epoch=40", "trainer.batch_size=8", "optim.lr=3e-3",
    "data.segment_seconds=0.5", "data.val_size=16", "data.corpus_size=32", "data.noise_corpus_size=16",
    "data.snr_db=[0,5]", "data.families=[white,coloured]", "model.n_fft=256", "model.hop=128", "model.hidden=32",
    "trainer.validation.slow_examples=0", "trainer.validation.media_examples=0", "sched=none",
]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.layers=1"],
        ["model.layers=1", "model.bidirectional=true"],
        ["model.layers=2", "model.dropout=0.1"],
        ["model.layers=2", "model.proj_size=16"],
        ["model.domain=complex", "model.layers=1"],
        ["model.mask=gain", "model.layers=1"],
        ["model.domain=waveform", "model.layers=1"],
    ],
    ids=["unidirectional", "bidirectional", "stacked_dropout", "projected", "complex", "gain", "waveform"],
)
def test_each_variant_and_domain_learns_the_synthetic_task(tiny_cfg, overrides):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(*LEARN, *overrides)
    before, after = before_and_after_one_epoch(cfg)
    # learned: better than its untrained self, and 1 dB better than the noisy input
    assert after["si_sdr"] > before["si_sdr"] and after["si_sdri"] > 1.0, (
        before["si_sdr"],
        after["si_sdr"],
        after["si_sdri"],
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cudnn_runs_the_stack_fused_with_contiguous_weights(dtype, recwarn):
    stack = LSTMStack(40, 64, layers=2, bidirectional=True, proj_size=32).cuda()
    x = torch.randn(4, 50, 40, device="cuda")
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        y, _ = stack(x)
    y.float().sum().backward()
    assert not [w for w in recwarn if "contiguous chunk" in str(w.message)]
    # fp16: cuDNN's fp16 kernel. bf16: PyTorch's autocast would run it in fp16 with no
    # scaler, so the stack keeps the recurrence in float32 (models/lstm.py)
    assert y.dtype == (torch.float16 if dtype == torch.float16 else torch.float32)
