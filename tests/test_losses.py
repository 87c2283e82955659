"""Losses against brute-force references written straight from the formulas (mmv.losses module doc)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmv import losses
from mmv.losses import MMVLoss, _bag_logsumexp, mil_nce_loss, nce_loss

DIRECTIONS = ("joint", "released", "symmetric", "v2x")
TAU = 0.3  # large enough that float64 gradcheck's finite differences stay well conditioned


# ----------------------------------------------------------------------------------------------------------------
# Brute-force references: explicit loops over the batch and the narrations, nothing vectorised.
# ----------------------------------------------------------------------------------------------------------------

def reference_mil_nce(video, text, text_mask, video_mask, temperature, direction):
    """-log(sum_P s / D) averaged over the samples that have a term; s(u, w) = exp(u.w / tau) on unit vectors."""
    batch, num_texts = text_mask.shape
    v = [video[i] / video[i].norm() for i in range(batch)]
    t = [[text[i, k] / text[i, k].norm() for k in range(num_texts)] for i in range(batch)]

    def s(i: int, j: int, k: int) -> torch.Tensor:  # video i against narration k of sample j
        return torch.exp(torch.dot(v[i], t[j][k]) / temperature)

    losses = []
    for i in range(batch):
        if not video_mask[i] or not text_mask[i].any():
            continue  # no term for this sample
        positives = sum(s(i, i, k) for k in range(num_texts) if text_mask[i, k])
        other_texts = sum(s(i, j, k) for j in range(batch) if j != i
                          for k in range(num_texts) if text_mask[j, k])  # (x_v, x'_t)
        other_videos = sum(s(j, i, k) for j in range(batch) if j != i and video_mask[j]
                           for k in range(num_texts) if text_mask[i, k])  # (x'_v, x_t)
        v2x = -torch.log(positives / (positives + other_texts))
        x2v = -torch.log(positives / (positives + other_videos))
        joint = -torch.log(positives / (positives + other_texts + other_videos))
        # The released implementations' denominator: the whole row (positives included) and the whole column
        # block (positives included again).
        released = -torch.log(positives / (positives + other_texts + positives + other_videos))
        losses.append({"joint": joint, "released": released, "v2x": v2x, "symmetric": (v2x + x2v) / 2}[direction])
    if not losses:
        return video.sum() * 0.0
    return sum(losses) / len(losses)


def reference_nce(video, audio, audio_mask, temperature, direction):
    """NCE written separately: one positive per sample, masks on the audio only."""
    batch = video.shape[0]
    v = [video[i] / video[i].norm() for i in range(batch)]
    a = [audio[i] / audio[i].norm() for i in range(batch)]

    def s(i: int, j: int) -> torch.Tensor:
        return torch.exp(torch.dot(v[i], a[j]) / temperature)

    losses = []
    for i in range(batch):
        if not audio_mask[i]:
            continue
        other_audio = sum(s(i, j) for j in range(batch) if j != i and audio_mask[j])
        other_video = sum(s(j, i) for j in range(batch) if j != i)
        v2x = -torch.log(s(i, i) / (s(i, i) + other_audio))
        x2v = -torch.log(s(i, i) / (s(i, i) + other_video))
        joint = -torch.log(s(i, i) / (s(i, i) + other_audio + other_video))
        released = -torch.log(s(i, i) / (2 * s(i, i) + other_audio + other_video))
        losses.append({"joint": joint, "released": released, "v2x": v2x, "symmetric": (v2x + x2v) / 2}[direction])
    return sum(losses) / len(losses)


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------

def make_batch(batch=7, num_texts=3, dim=5, dtype=torch.float64, seed=0):
    """Random embeddings with absent audio, absent text and variable numbers of narrations."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, dim, generator=gen, dtype=dtype)
    audio = torch.randn(batch, dim, generator=gen, dtype=dtype)
    text = torch.randn(batch, num_texts, dim, generator=gen, dtype=dtype)
    counts = torch.randint(0, num_texts + 1, (batch,), generator=gen)
    counts[0], counts[1], counts[2] = 0, 1, num_texts  # a clip without text, one with a single narration, a full one
    text_mask = torch.arange(num_texts)[None, :] < counts[:, None]  # [B, K]
    audio_mask = torch.ones(batch, dtype=torch.bool)
    audio_mask[[1, 4]] = False
    return video, audio, text, text_mask, audio_mask


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


# ----------------------------------------------------------------------------------------------------------------
# Values and gradients against the references
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", DIRECTIONS)
def test_mil_nce_matches_brute_force(direction):
    video, _, text, text_mask, audio_mask = make_batch()
    v_fast, t_fast = leaves(video, text)
    v_ref, t_ref = leaves(video, text)
    fast = mil_nce_loss(v_fast, t_fast, text_mask, temperature=TAU, direction=direction)
    ref = reference_mil_nce(v_ref, t_ref, text_mask, torch.ones(7, dtype=torch.bool), TAU, direction)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=0)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(v_fast.grad, v_ref.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(t_fast.grad, t_ref.grad, rtol=1e-9, atol=1e-12)
    # Narrations that are padding get no gradient: they are neither positives nor negatives.
    assert torch.all(t_fast.grad[~text_mask] == 0)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_mil_nce_with_absent_queries_matches_brute_force(direction):
    """The audio-text form: the first argument (audio) may be missing too."""
    _, audio, text, text_mask, audio_mask = make_batch(seed=1)
    a_fast, t_fast = leaves(audio, text)
    a_ref, t_ref = leaves(audio, text)
    fast = mil_nce_loss(a_fast, t_fast, text_mask, video_mask=audio_mask, temperature=TAU, direction=direction)
    ref = reference_mil_nce(a_ref, t_ref, text_mask, audio_mask, TAU, direction)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=0)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(a_fast.grad, a_ref.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(t_fast.grad, t_ref.grad, rtol=1e-9, atol=1e-12)
    assert torch.all(a_fast.grad[~audio_mask] == 0)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_nce_matches_brute_force(direction):
    video, audio, _, _, audio_mask = make_batch(seed=2)
    v_fast, a_fast = leaves(video, audio)
    v_ref, a_ref = leaves(video, audio)
    fast = nce_loss(v_fast, a_fast, audio_mask=audio_mask, temperature=0.07, direction=direction)
    ref = reference_nce(v_ref, a_ref, audio_mask, 0.07, direction)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=0)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(v_fast.grad, v_ref.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a_fast.grad, a_ref.grad, rtol=1e-9, atol=1e-12)
    assert torch.all(a_fast.grad[~audio_mask] == 0)


def test_released_direction_is_milnce_released_code():
    """"released" equals a transcription of MIL-NCE's released ``MILNCELoss`` (rows and columns of the score
    tensor concatenated before one log-sum-exp), on unit vectors divided by the temperature, no masks."""
    gen = torch.Generator().manual_seed(3)
    batch, num_texts, dim = 6, 4, 8
    video = F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(batch, num_texts, dim, generator=gen, dtype=torch.float64), dim=-1)
    x = (video @ text.reshape(batch * num_texts, dim).T / TAU).view(batch, batch, num_texts)
    nominator = torch.logsumexp((x * torch.eye(batch, dtype=x.dtype)[:, :, None]).sum(dim=1), dim=1)
    denominator = torch.logsumexp(torch.cat((x, x.permute(1, 0, 2)), dim=1).view(batch, -1), dim=1)
    released_code = torch.mean(denominator - nominator)
    ours = mil_nce_loss(video, text, torch.ones(batch, num_texts, dtype=torch.bool), temperature=TAU,
                        direction="released")
    torch.testing.assert_close(ours, released_code)
    # ... and it is the joint form plus the positives counted a second time: never below it.
    joint = mil_nce_loss(video, text, torch.ones(batch, num_texts, dtype=torch.bool), temperature=TAU)
    assert ours > joint


def test_nce_equals_cross_entropy_forms_without_masks():
    """A second, independent formulation: CLIP's cross-entropies over the similarity matrix."""
    video, audio, *_ = make_batch(batch=9, seed=3)
    logits = F.normalize(video, dim=1) @ F.normalize(audio, dim=1).T / 0.07
    labels = torch.arange(9)
    v2x = F.cross_entropy(logits, labels)
    x2v = F.cross_entropy(logits.T, labels)
    torch.testing.assert_close(nce_loss(video, audio, temperature=0.07, direction="v2x"), v2x)
    torch.testing.assert_close(nce_loss(video, audio, temperature=0.07, direction="symmetric"), (v2x + x2v) / 2)
    # joint: the row and the column of each positive, the positive counted once
    joint = torch.logsumexp(torch.cat([logits, logits.T - torch.diag(torch.full((9,), math.inf))], dim=1), dim=1)
    torch.testing.assert_close(nce_loss(video, audio, temperature=0.07), (joint - logits.diag()).mean())


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradcheck_float64(direction):
    video, audio, text, text_mask, audio_mask = make_batch(batch=5, num_texts=3, dim=4, seed=4)
    video, audio, text = leaves(video, audio, text)
    assert torch.autograd.gradcheck(
        lambda v, t: mil_nce_loss(v, t, text_mask, temperature=TAU, direction=direction), (video, text))
    assert torch.autograd.gradcheck(
        lambda v, a: nce_loss(v, a, audio_mask=audio_mask, temperature=TAU, direction=direction), (video, audio))


def test_gradcheck_bag_logsumexp_kernel():
    """The memory-saving kernel itself, including an empty bag (a constant "excluded" column, not checked)."""
    _, _, text, text_mask, _ = make_batch(batch=5, num_texts=3, dim=4, seed=5)
    queries = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    bags = text.clone().requires_grad_(True)
    nonempty = text_mask.any(dim=1)
    assert not nonempty.all()
    assert torch.autograd.gradcheck(
        lambda q, b: _bag_logsumexp(q, b, text_mask, TAU)[:, nonempty], (queries, bags))
    out = _bag_logsumexp(queries, bags, text_mask, TAU)
    brute = torch.stack([torch.stack([
        torch.logsumexp(torch.stack([queries[m] @ bags[n, k] / TAU for k in range(3) if text_mask[n, k]]), 0)
        if text_mask[n].any() else torch.tensor(losses._excluded(torch.float64), dtype=torch.float64)
        for n in range(5)])
        for m in range(4)])
    torch.testing.assert_close(out, brute)


# ----------------------------------------------------------------------------------------------------------------
# Masks, MMVLoss, dtypes, errors
# ----------------------------------------------------------------------------------------------------------------

def test_no_term_gives_zero_with_connected_graph():
    video, audio, text, *_ = leaves(*make_batch(dtype=torch.float32)[:3])
    loss = MMVLoss()(vid_embd_toaud=video, aud_embd_tovid=audio, vid_embd_totxt=video, txt_embd_tovid=text,
                     audio_mask=torch.zeros(7, dtype=torch.bool), text_mask=torch.zeros(7, 3, dtype=torch.bool))
    assert loss["loss"].item() == 0 and loss["nce_va"].item() == 0 and loss["milnce_vt"].item() == 0
    loss["loss"].backward()
    for tensor in (video, audio, text):
        assert tensor.grad is not None and torch.all(tensor.grad == 0)


def test_mmv_loss_combines_weighted_terms_and_ignores_extra_keys():
    video, audio, text, text_mask, audio_mask = make_batch(seed=6)
    model_out = {"vid_embd_toaud": video, "aud_embd_tovid": audio, "vid_embd_totxt": video * 2 + 1,
                 "txt_embd_tovid": text, "aud_embd_totxt": audio + 1, "txt_embd_toaud": text * 3,
                 "vid_repr": torch.randn(7, 11), "txt_repr": torch.randn(7, 3, 13)}
    loss = MMVLoss(lambda_va=1.0, lambda_vt=10.0, lambda_at=0.5, temperature=TAU, direction="symmetric")
    out = loss(**model_out, audio_mask=audio_mask, text_mask=text_mask)
    nce = reference_nce(video, audio, audio_mask, TAU, "symmetric")
    milnce = reference_mil_nce(video * 2 + 1, text, text_mask, torch.ones(7, dtype=torch.bool), TAU, "symmetric")
    at = reference_mil_nce(audio + 1, text * 3, text_mask, audio_mask, TAU, "symmetric")
    torch.testing.assert_close(out["nce_va"], nce)
    torch.testing.assert_close(out["milnce_vt"], milnce)
    torch.testing.assert_close(out["milnce_at"], at)
    torch.testing.assert_close(out["loss"], nce + 10 * milnce + 0.5 * at)
    only_va = MMVLoss(lambda_vt=0.0)(**model_out, audio_mask=audio_mask)
    assert set(only_va) == {"loss", "nce_va"}


def test_single_sentence_text_and_default_masks():
    video, _, text, *_ = make_batch(seed=7)
    ones = torch.ones(7, 1, dtype=torch.bool)
    expected = reference_mil_nce(video, text[:, :1], ones, ones[:, 0], TAU, "joint")
    torch.testing.assert_close(mil_nce_loss(video, text[:, 0], temperature=TAU), expected)


def test_bfloat16_under_autocast_accumulates_in_float32():
    video, audio, text, text_mask, audio_mask = make_batch(batch=16, num_texts=4, dim=32, dtype=torch.float32)
    kwargs = dict(vid_embd_toaud=video, aud_embd_tovid=audio, vid_embd_totxt=video, txt_embd_tovid=text,
                  audio_mask=audio_mask, text_mask=text_mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = MMVLoss()(**{k: v.bfloat16() if v.is_floating_point() else v for k, v in kwargs.items()})
    exact = MMVLoss()(**{k: v.bfloat16().double() if v.is_floating_point() else v for k, v in kwargs.items()})
    assert low["loss"].dtype == torch.float32
    torch.testing.assert_close(low["loss"].double(), exact["loss"], rtol=1e-5, atol=0)


def test_matches_vectorised_reference_at_larger_batch():
    """B=96, K=5 against an independent vectorised formula (materialised [B, B, K] scores)."""
    video, _, text, text_mask, _ = make_batch(batch=96, num_texts=5, dim=16, dtype=torch.float64, seed=8)
    v, t = leaves(video, text)
    scores = torch.einsum("id,jkd->ijk", F.normalize(v, dim=-1), F.normalize(t, dim=-1)) / 0.07
    bag = torch.logsumexp(scores.masked_fill(~text_mask[None], -math.inf), dim=2)  # [B, B]
    has_text = text_mask.any(1)
    denom = torch.logsumexp(torch.cat([bag, bag.T.masked_fill(torch.eye(96, dtype=torch.bool), -math.inf)], 1), 1)
    expected = (denom - bag.diag())[has_text].mean()
    v2, t2 = leaves(video, text)
    fast = mil_nce_loss(v2, t2, text_mask, temperature=0.07)
    torch.testing.assert_close(fast, expected)
    torch.autograd.backward([fast, expected])
    torch.testing.assert_close(v2.grad, v.grad)
    torch.testing.assert_close(t2.grad, t.grad)


@pytest.mark.parametrize("bad, message", [
    (dict(text=torch.randn(7, 3, 4)), "expected embeddings"),
    (dict(text_mask=torch.ones(7, 2, dtype=torch.bool)), "bool mask of shape"),
    (dict(text_mask=torch.ones(7, 3)), "bool mask of shape"),
    (dict(temperature=0.0), "temperature must be positive"),
    (dict(direction="x2v"), "direction must be one of"),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    video, _, text, text_mask, _ = make_batch()
    kwargs = dict(text=text, text_mask=text_mask, temperature=0.07, direction="joint") | bad
    with pytest.raises(ValueError, match=message):
        mil_nce_loss(video, **kwargs)


def test_missing_model_output_is_named():
    video, audio, *_ = make_batch()
    with pytest.raises(ValueError, match="txt_embd_tovid"):
        MMVLoss()(vid_embd_toaud=video, aud_embd_tovid=audio, vid_embd_totxt=video)


def test_chunked_kernel_gives_the_same_values_and_gradients(monkeypatch):
    """Small chunks (several per call, uneven last one) against one chunk."""
    video, _, text, text_mask, _ = make_batch(batch=9, num_texts=3, dim=4, seed=9)
    v_one, t_one = leaves(video, text)
    v_many, t_many = leaves(video, text)
    one = mil_nce_loss(v_one, t_one, text_mask, temperature=TAU)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 2 * 9 * 3)  # two query rows per chunk
    many = mil_nce_loss(v_many, t_many, text_mask, temperature=TAU)
    torch.autograd.backward([one, many])
    torch.testing.assert_close(many, one, rtol=1e-12, atol=0)
    torch.testing.assert_close(v_many.grad, v_one.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(t_many.grad, t_one.grad, rtol=1e-12, atol=1e-15)
