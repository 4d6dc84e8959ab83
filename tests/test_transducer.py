"""The transducer task: rnnt_loss against a brute-force alignment sum, greedy decoding on a
known joiner, the token data, precision and compile, and a real short run."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from losses import RNNTLoss
from models.transducer import Transducer, TransducerOutput, greedy_decode
from tests.conftest import CPU_PRECISIONS, before_and_after_one_epoch, cli, compose_cfg, scalars, summary_json
from trainer.data.tokens import SyntheticTokens, token_table
from trainer.tasks import TokenRecognition


def brute_force_nll(logits: torch.Tensor, tokens: list[int], blank: int = 0) -> float:
    """-log p(tokens) summed over every alignment of one utterance's (T, U + 1, V) lattice.

    An alignment is T blanks and U tokens in some order that ends with a blank: a token at
    (t, u) moves to (t, u + 1), a blank to (t + 1, u); the last blank leaves (T - 1, U)."""
    lp = logits.double().log_softmax(-1)
    frames, units = logits.shape[0], len(tokens)
    total = 0.0
    for where in itertools.combinations(range(frames + units - 1), units):
        t = u = 0
        logp = 0.0
        for i in range(frames + units):
            if i in where:
                logp += lp[t, u, tokens[u]].item()
                u += 1
            else:
                logp += lp[t, u, blank].item()
                t += 1
        total += math.exp(logp)
    return -math.log(total)


def test_rnnt_loss_hand_checked_single_frame_single_token():
    # one frame, one token: the only alignment is "token, then blank"
    logits = torch.log(torch.tensor([[[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]]))[None]  # (1, T=1, U+1=2, V=3)
    out = TransducerOutput(logits, torch.tensor([1]), None)
    loss = RNNTLoss()(out, {"tokens": torch.tensor([[1]]), "token_lengths": torch.tensor([1])})
    assert loss.item() == pytest.approx(-math.log(0.7 * 0.6), rel=1e-5)


def test_rnnt_loss_matches_brute_force_alignment_sum_with_padding():
    torch.manual_seed(0)
    # padded lattice (B=2, T=4, U+1=4, V=5); utterance 0 uses 3 frames and 2 tokens, 1 uses 4 and 3:
    # padding beyond either must not matter
    logits = torch.randn(2, 4, 4, 5, requires_grad=True)
    tokens = torch.tensor([[3, 1, 0], [2, 2, 4]])
    lengths, token_lengths = torch.tensor([3, 4]), torch.tensor([2, 3])
    loss = RNNTLoss()(TransducerOutput(logits, lengths, None), {"tokens": tokens, "token_lengths": token_lengths})
    expected = [brute_force_nll(logits[0, :3, :3].detach(), [3, 1]), brute_force_nll(logits[1].detach(), [2, 2, 4])]
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    loss.backward()
    assert logits.grad[0, 3].abs().sum() == 0 and logits.grad[0, :, 3].abs().sum() == 0  # padding gets no gradient
    per_token = RNNTLoss(per_token=True)(
        TransducerOutput(logits, lengths, None), {"tokens": tokens, "token_lengths": token_lengths}
    )
    assert per_token.item() == pytest.approx((expected[0] / 2 + expected[1] / 3) / 2, rel=1e-5)


def test_greedy_decode_on_a_known_joiner():
    """The joiner reads (frame, tokens emitted so far) from a table: frame 0 emits 2 then
    blank, frame 1 blanks, frame 2 emits 1 and 3 then blank, frame 3 emits 4 forever."""
    script = {0: [2], 1: [], 2: [1, 3], 3: [4] * 10}
    vocab = 5

    def predict(tokens, state):  # the state, shaped like an LSTM's (layers, B, 1), counts emitted tokens
        count = torch.zeros(tokens.shape[0], dtype=torch.long) if state is None else state[0][0, :, 0] + 1
        return count[:, None, None].float(), (count[None, :, None], count[None, :, None])

    def join(enc, pred):
        logits = torch.full((enc.shape[0], vocab), -10.0)
        for b in range(enc.shape[0]):
            t, emitted = int(enc[b, 0]), int(pred[b, 0])
            before = sum(len(script[f]) for f in range(t))
            k = emitted - before  # tokens already emitted on this frame
            logits[b, script[t][k] if k < len(script[t]) else 0] = 0.0
        return logits

    frames = torch.arange(4.0)[None, :, None].expand(2, 4, 1)
    hyps = greedy_decode(frames, torch.tensor([4, 3]), predict, join, blank=0, max_symbols=3)
    assert hyps[0] == [2, 1, 3, 4, 4, 4]  # frame 3 is capped at max_symbols
    assert hyps[1] == [2, 1, 3]  # its length ends before frame 3


def test_token_data_is_deterministic_padded_and_labelled():
    data = SyntheticTokens(vocab=6, tokens=(2, 4), val_size=4)
    a, b = data.example(0, 17), data.example(0, 17)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["audio"], data.example(1, 17)["audio"])  # splits differ
    n, u = int(a["audio_lengths"]), int(a["token_lengths"])
    assert a["audio"].shape == (data.length,) and torch.all(a["audio"][n:] == 0) and a["audio"][:n].abs().sum() > 0
    assert 2 <= u <= 4 and a["tokens"].shape == (4,) and all(1 <= int(k) <= 6 for k in a["tokens"][:u])
    assert len(set(token_table(12))) == 12
    with pytest.raises(ValueError, match="data.segment_seconds"):
        SyntheticTokens(tokens=(1, 9), segment_seconds=1.0)


def test_a_token_sounds_at_its_table_frequencies():
    data = SyntheticTokens(vocab=8, tokens=(1, 1), talker_shift=0.0, snr_db=(60, 60), glide=0.0)
    for index in range(3):
        ex = data.example(0, index)
        k, n = int(ex["tokens"][0]), int(ex["audio_lengths"])
        spectrum = torch.fft.rfft(ex["audio"][:n]).abs()
        freqs = torch.fft.rfftfreq(n, 1 / data.sample_rate)
        low, high, _ = data.table[k - 1]
        split = freqs < 1000  # the two grids: low partials below 1 kHz, high ones above
        peaks = freqs[split][spectrum[split].argmax()], freqs[~split][spectrum[~split].argmax()]
        assert abs(peaks[0] - low) < 15 and abs(peaks[1] - high) < 15, (k, peaks, low, high)


@pytest.mark.parametrize("cpu_precision", sorted(CPU_PRECISIONS), indirect=True)
def test_transducer_forward_backward_under_each_precision_and_compile(cpu_precision):
    dtype = cpu_precision
    torch.manual_seed(0)
    data = SyntheticTokens(vocab=4, tokens=(1, 3), val_size=4)
    batch = torch.utils.data.default_collate(data.examples(0, [0, 1, 2]))
    model = Transducer(5, hidden=16, layers=1, embed=8, pred_hidden=8, joint=16)
    task = TokenRecognition()
    inputs, target = task.pair(batch)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(inputs)
        loss = RNNTLoss()(out, target)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert out.logits.shape == (3, out.encoded.shape[1], 4, 5)
    if dtype is None:  # compile: dynamo runs the LSTMs eagerly between compiled pieces
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(compiled(inputs).logits, model(inputs).logits)
        torch._dynamo.reset()


SHORT = [
    "task=transducer", "trainer.batch_size=8", "trainer.val_batch_size=16", "data.val_size=16", "data.vocab=4",
    "model.hidden=32", "model.layers=1", "optim.lr=3e-3", "sched=none",
]  # fmt: skip


def test_short_transducer_training_lowers_the_loss_and_the_error_rate():
    cfg = compose_cfg(*SHORT, "trainer.steps_per_epoch=40")
    before, after = before_and_after_one_epoch(cfg)
    assert after["loss/total"] < 0.5 * before["loss/total"], (before["loss/total"], after["loss/total"])
    assert after["ter"] < before["ter"], (before["ter"], after["ter"])


def test_transducer_cli_run_logs_error_rates_and_decoded_text(tmp_path):
    run_dir = tmp_path / "run"
    cli(
        *SHORT,
        "trainer.epochs=2",
        "trainer.steps_per_epoch=10",
        "trainer.log_every=5",
        "trainer.progress=log",
        "trainer.validation.media_examples=2",
        f"hydra.run.dir={run_dir}",
        check=True,
        timeout=300,
    )
    summary = summary_json(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    assert summary["status"] == "completed" and summary["monitor"] == "ter" and summary["mode"] == "min"
    assert all(0 <= h["ter"] <= 1.5 and h["ter"] == pytest.approx(h["token_errors"] / h["ref_tokens"]) for h in history)
    train = scalars(run_dir / "tb" / "train")["loss/total"]
    assert train[-1][1] < train[0][1]
    val = scalars(run_dir / "tb" / "val")
    assert "metrics/ter" in val and "loss/total" in val  # same loss tag as the train writer

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb" / "val"), size_guidance={"tensors": 0, "audio": 0})
    acc.Reload()
    texts = [t for t in acc.Tags()["tensors"] if t.startswith("text/")]
    assert sorted(texts) == ["text/0/text_summary", "text/1/text_summary"]
    shown = acc.Tensors("text/0/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert shown.startswith("ref: ") and "hyp: " in shown
    assert "audio/0/input" in acc.Tags()["audio"]


def test_task_transducer_selects_its_data_model_loss_and_budget():
    cfg = compose_cfg("task=transducer")
    assert cfg.data._target_.endswith("SyntheticTokens") and cfg.model._target_ == "models.Transducer"
    assert list(cfg.loss.terms) == ["rnnt"] and cfg.model.vocab_size == cfg.data.vocab + 1
    assert (cfg.trainer.epochs, cfg.trainer.steps_per_epoch, cfg.trainer.target) == (8, 200, 0.10)
    cfg = compose_cfg("task=transducer", "trainer.epochs=2", "model.hidden=16", "data.vocab=5")
    assert (cfg.trainer.epochs, cfg.model.hidden, cfg.model.vocab_size) == (2, 16, 6)  # the command line wins
    assert compose_cfg().trainer.epochs == 10  # the default job keeps its own budget


def test_audio_augmentation_with_the_transducer_is_refused_by_name():
    from trainer.config import ConfigError
    from trainer.run import assemble

    with pytest.raises(ConfigError, match="augment=none"):
        assemble(compose_cfg(*SHORT, "augment=default"))
