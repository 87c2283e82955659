"""MMV's contrastive losses: NCE (video-audio) and MIL-NCE (video-narrations), local or across devices.

The objective of MMV (Alayrac et al., NeurIPS 2020, section 2) for a clip x is

    L(x) = lambda_va * NCE(x_v, x_a) + lambda_vt * MIL-NCE(x_v, {x_t})

with L2-normalised embeddings compared by dot product divided by a temperature tau (0.07). Write
s(u, w) = exp(u . w / tau). For sample i of a batch, with positives P(i) (its own narrations; for NCE the one
audio clip) and negatives N(i) taken from the other samples j != i of the (global) batch, MIL-NCE (Miech et al.,
CVPR 2020) is

    MIL-NCE_i = -log( sum_{k in P(i)} s(v_i, t_ik) / D_i )

and NCE is the special case |P(i)| = 1. The denominator D_i depends on ``direction``:

    "joint" (default)   D_i = sum_{k in P(i)} s(v_i, t_ik)                  positives, once
                            + sum_{j != i} sum_{k in P(j)} s(v_i, t_jk)     (x_v, x'_t): other samples' narrations
                            + sum_{j != i} sum_{k in P(i)} s(v_j, t_ik)     (x'_v, x_t): other samples' videos
    "released"          D_i = "joint" + sum_{k in P(i)} s(v_i, t_ik)         the positives twice: every score of
                            the clip's row (its video against every bag) and every score of its column block
                            (every video against its bag), as the released implementations compute it
    "v2x"               D_i = the first two lines only (a softmax over the bags of narrations, for each video)
    "symmetric"         the CLIP-style mean of "v2x" and its transpose, whose D_i is the first and third lines
                        (a softmax over videos, for each bag of narrations)

"joint" is MIL-NCE's own formulation as written, one denominator holding both kinds of negatives and the positives
once. "released" is what the two public implementations by the paper's authors' groups compute: MIL-NCE's PyTorch
``MILNCELoss`` concatenates the rows and the columns of the score tensor before one log-sum-exp, and VATT's
``AsymmetricNCE`` (whose docstring says it follows MMV) does the same; both count the positives twice. Which form
produced the paper's numbers is not stated (docs/losses.md gives our measurements of both).

Masks for absent modalities: a sample whose bag is empty (an AudioSet clip has no narration; a HowTo100M clip may
have no audio) contributes no term and none of its missing embeddings are used as positives or negatives. The
loss is the mean over the samples that have a term, and 0 (still attached to the graph) when none has.

Across devices (``world_size > 1``) every rank gathers the embeddings and masks of all ranks (with gradients, see
:func:`gather_features`) and, with ``local_loss=True``, computes only the rows of its own samples against all
columns. Each rank's value is scaled so that DDP's gradient averaging reproduces exactly the gradients of the
single-process loss on the global batch; the mean of the per-rank values is the global-batch loss.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["Direction", "gather_features", "nce_loss", "mil_nce_loss", "MMVLoss"]

Direction = Literal["joint", "released", "symmetric", "v2x"]
_DIRECTIONS = ("joint", "released", "symmetric", "v2x")


# ----------------------------------------------------------------------------------------------------------------
# Gathering across ranks
# ----------------------------------------------------------------------------------------------------------------

class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns, to each rank, the sum over ranks of the gradients of its slice.

    Every rank's loss uses every rank's embeddings, so the gradient of the *sum* of the per-rank losses with respect
    to this rank's embeddings is the sum over ranks of the gathered tensor's gradient, restricted to this slice.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor, rank: int, world_size: int) -> Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.batch = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        import torch.distributed as dist

        # NOTE: an all-reduce of the whole [world_size * B, ...] gradient rather than a reduce-scatter, because
        # gloo has no reduce-scatter; these are embeddings (a few MB), small next to the model's gradients.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch], None, None


def gather_features(
    *tensors: Tensor | None,
    rank: int,
    world_size: int,
    gather_with_grad: bool = True,
) -> tuple[Tensor | None, ...]:
    """Concatenates each tensor over all ranks along dim 0 (rank order), keeping gradients where asked.

    With ``gather_with_grad`` floating-point tensors go through an all-gather whose backward sums, over ranks, the
    gradients with respect to this rank's slice and returns them here, so cross-rank negatives push on the
    embeddings that made them: together with the loss scaling in :func:`nce_loss`, DDP's averaged gradients are
    then exactly the single-process gradients of the global batch. Without it they are gathered without autograd
    and this rank's slice is replaced by the local tensor, so only local gradients flow (less communication, but
    the gradients are no longer the global-batch ones). Boolean and integer tensors (masks) carry no gradient.
    ``None`` entries are passed through.

    Args:
        *tensors: Tensors with the same shape on every rank (the same batch size B on all ranks).
        rank: This process's rank.
        world_size: Number of processes; 1 returns the inputs unchanged.
        gather_with_grad: Differentiate through the gather (needed for exact global-batch gradients).

    Returns:
        The gathered tensors, ``[world_size * B, ...]`` each, in the order given.
    """
    if world_size == 1:
        return tensors
    import torch.distributed as dist

    gathered: list[Tensor | None] = []
    for tensor in tensors:
        if tensor is None:
            gathered.append(None)
        elif tensor.is_floating_point() and gather_with_grad:
            gathered.append(_AllGatherWithGrad.apply(tensor, rank, world_size))
        else:
            # NOTE: gloo has no bool all_gather; masks travel as uint8.
            payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.detach()
            parts = [torch.empty_like(payload) for _ in range(world_size)]
            dist.all_gather(parts, payload.contiguous())
            if tensor.dtype == torch.bool:
                parts = [part.bool() for part in parts]
            elif tensor.is_floating_point():
                parts[rank] = tensor  # local gradients only
            gathered.append(torch.cat(parts, dim=0))
    return tuple(gathered)


# ----------------------------------------------------------------------------------------------------------------
# log sum_k exp(q_m . b_nk / tau) over the valid members of each bag, in O(M x N) memory
# ----------------------------------------------------------------------------------------------------------------

# Rows of queries per chunk are chosen so that one chunk of scores holds at most this many elements (32 MiB in
# float32): the memory of the loss is then bounded whatever the batch, at the price of a Python loop over chunks.
_CHUNK_ELEMENTS = 2**23


def _row_chunks(num_rows: int, row_elements: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(row_elements, 1))
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


def _excluded(dtype: torch.dtype) -> float:
    """The score that stands for "not in the sum": exp() of it minus any real score is exactly 0.

    A finite value rather than -inf, so that a log-sum-exp over only excluded entries (a sample without text)
    stays finite and its gradient is 0 rather than nan; real scores are bounded by 1 / temperature.
    """
    return torch.finfo(dtype).min / 4


class _BagLogSumExp(torch.autograd.Function):
    """``out[m, n] = log sum_{k: mask[n, k]} exp(queries[m] . bags[n, k] * scale)``; ``_excluded`` for an empty bag.

    The full ``[M, N, K]`` score tensor is held only when it fits in one chunk (``_CHUNK_ELEMENTS``); then its
    softmax weights are kept for backward. Otherwise scores are made for a chunk of query rows at a time, reduced
    over K, and recomputed chunk by chunk in backward, so memory is the ``[M, N]`` output plus one bounded chunk,
    where autograd through a vectorised version keeps several ``[M, N, K]`` tensors alive for backward.
    """

    @staticmethod
    def forward(ctx, queries: Tensor, bags: Tensor, bag_mask: Tensor, scale: float) -> Tensor:
        num_bags, bag_size, dim = bags.shape
        flat_bags = bags.reshape(num_bags * bag_size, dim)
        scaled_queries = queries * scale  # scaling [M, D] rather than every [c, N, K] chunk
        mask_bias = _mask_bias(bag_mask, queries.dtype)
        excluded = _excluded(queries.dtype)
        out = queries.new_empty(queries.shape[0], num_bags)  # [M, N]
        chunks = _row_chunks(queries.shape[0], num_bags * bag_size)
        for rows in chunks:
            scores = torch.addmm(mask_bias, scaled_queries[rows], flat_bags.T).view(-1, num_bags, bag_size)
            bag_max = scores.amax(dim=2).clamp_(min=excluded)  # [c, N]; finite for empty bags too
            exp_scores = scores.sub_(bag_max[:, :, None]).exp_()  # [c, N, K], 0 for masked members
            bag_sum = exp_scores.sum(dim=2)
            out[rows] = bag_sum.log().add_(bag_max)
        out.clamp_(min=excluded)  # empty bags: log(0) = -inf -> excluded
        # One chunk: keep the softmax weights within each bag (in the scores' memory) for backward.
        ctx.scale, ctx.chunks, ctx.keeps_weights = scale, chunks, len(chunks) == 1
        weights = None
        if ctx.keeps_weights:
            weights = exp_scores.div_(bag_sum.clamp_(min=torch.finfo(bag_sum.dtype).tiny)[:, :, None])
        ctx.save_for_backward(queries, bags, bag_mask, out, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        queries, bags, bag_mask, out, saved_weights = ctx.saved_tensors
        num_bags, bag_size, dim = bags.shape
        flat_bags = bags.reshape(num_bags * bag_size, dim)
        grad_queries = torch.empty_like(queries) if ctx.needs_input_grad[0] else None
        grad_bags = torch.zeros_like(flat_bags) if ctx.needs_input_grad[1] else None
        scaled_queries = queries * ctx.scale
        mask_bias = None if ctx.keeps_weights else _mask_bias(bag_mask, queries.dtype)
        grad_out = (grad_out * ctx.scale).contiguous()  # [M, N]; it often arrives transposed: slow broadcasts
        for rows in ctx.chunks:
            # d out[m, n] / d score[m, n, k] is the softmax weight of member k within bag n (masked: 0)
            if ctx.keeps_weights:
                weights = saved_weights * grad_out[:, :, None]  # out of place: keep the saved weights intact
            else:
                scores = torch.addmm(mask_bias, scaled_queries[rows], flat_bags.T).view(-1, num_bags, bag_size)
                weights = scores.sub_(out[rows, :, None]).exp_().mul_(grad_out[rows, :, None])
            grad_scores = weights.view(-1, num_bags * bag_size)  # d loss / d (q . b), [c, N * K]
            if grad_queries is not None:
                grad_queries[rows] = grad_scores @ flat_bags
            if grad_bags is not None:
                grad_bags.addmm_(grad_scores.T, queries[rows])
        return grad_queries, None if grad_bags is None else grad_bags.view_as(bags), None, None


def _mask_bias(bag_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``[N * K]``: 0 for real bag members, -inf for padding; added to the scores inside the matmul."""
    bias = torch.zeros(bag_mask.numel(), dtype=dtype, device=bag_mask.device)
    return bias.masked_fill_(~bag_mask.reshape(-1), float("-inf"))


def _bag_logsumexp(queries: Tensor, bags: Tensor, bag_mask: Tensor, temperature: float) -> Tensor:
    """``[M, N]`` log of the summed exp-similarities of each query with the valid members of each bag.

    Args:
        queries: ``[M, D]``.
        bags: ``[N, K, D]``.
        bag_mask: ``[N, K]`` bool, which members are real.
        temperature: Divides the dot products.
    """
    return _BagLogSumExp.apply(queries, bags, bag_mask, 1.0 / temperature)


# ----------------------------------------------------------------------------------------------------------------
# The contrastive loss shared by NCE and MIL-NCE
# ----------------------------------------------------------------------------------------------------------------

def _check_inputs(queries: Tensor, bags: Tensor, bag_mask: Tensor, query_mask: Tensor | None, temperature: float,
                  direction: str) -> None:
    if queries.ndim != 2:
        raise ValueError(f"expected query embeddings [B, D], got shape {tuple(queries.shape)}")
    if bags.ndim != 3 or bags.shape[0] != queries.shape[0] or bags.shape[2] != queries.shape[1]:
        raise ValueError(f"expected embeddings [B, K, D] = [{queries.shape[0]}, K, {queries.shape[1]}] to match "
                         f"the queries {tuple(queries.shape)}, got shape {tuple(bags.shape)}")
    if bag_mask.shape != bags.shape[:2] or bag_mask.dtype != torch.bool:
        raise ValueError(f"expected a bool mask of shape {tuple(bags.shape[:2])}, got {bag_mask.dtype} "
                         f"{tuple(bag_mask.shape)}")
    if query_mask is not None and (query_mask.shape != queries.shape[:1] or query_mask.dtype != torch.bool):
        raise ValueError(f"expected a bool mask of shape {tuple(queries.shape[:1])}, got {query_mask.dtype} "
                         f"{tuple(query_mask.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")


def _contrastive_loss(
    queries: Tensor,
    bags: Tensor,
    bag_mask: Tensor,
    query_mask: Tensor | None,
    *,
    temperature: float,
    direction: str,
    local_loss: bool,
    gather_with_grad: bool,
    rank: int,
    world_size: int,
) -> Tensor:
    """MIL-NCE of queries ``[B, D]`` against bags of positives ``[B, K, D]`` (NCE when K = 1); see the module doc.

    Works on ``[R, N]`` matrices of bag log-sum-exps: R rows (this rank's samples under local loss, else all) by
    the N = world_size * B samples of the global batch.
    """
    _check_inputs(queries, bags, bag_mask, query_mask, temperature, direction)
    compute_dtype = torch.promote_types(queries.dtype, torch.float32)
    # NOTE: normalisation, scores and log-sum-exps run in float32 (at least) even under autocast.
    with torch.autocast(device_type=queries.device.type, enabled=False):
        q_local = F.normalize(queries.to(compute_dtype), dim=-1)  # [B, D]
        b_local = F.normalize(bags.to(compute_dtype), dim=-1)  # [B, K, D]
        q_all, b_all, qm_all, bm_all = gather_features(
            q_local, b_local, query_mask, bag_mask, rank=rank, world_size=world_size,
            gather_with_grad=gather_with_grad)  # [N, D], [N, K, D], [N] or None, [N, K]
        has_term_all = bm_all.any(dim=1) if qm_all is None else bm_all.any(dim=1) & qm_all  # [N]

        if world_size > 1 and local_loss:
            batch = q_local.shape[0]
            offset = rank * batch
            has_term = has_term_all[offset:offset + batch]
            q_to_bags = _bag_logsumexp(q_local, b_all, bm_all, temperature)  # [B, N]: own queries, all bags
            bags_to_q = None
            if direction != "v2x":
                bags_to_q = _bag_logsumexp(q_all, b_local, bag_mask, temperature).T  # [B, N]: own bags, all queries
        else:
            offset, has_term = 0, has_term_all
            q_to_bags = _bag_logsumexp(q_all, b_all, bm_all, temperature)  # [N, N]
            bags_to_q = q_to_bags.T

        excluded = _excluded(compute_dtype)
        rows = torch.arange(q_to_bags.shape[0], device=queries.device)
        positive = q_to_bags[rows, rows + offset]  # log sum_{k in P(i)} s(v_i, t_ik)
        if bags_to_q is not None and qm_all is not None:
            bags_to_q = bags_to_q.masked_fill(~qm_all[None, :], excluded)  # absent queries are no negatives
        row_loss = _row_losses(q_to_bags, bags_to_q, positive, offset, direction, excluded)  # [R]
        # Under local loss each rank holds 1/world_size of the rows; DDP divides the summed gradients by
        # world_size, so scale by world_size here to make the averaged gradients those of the global mean.
        rows_share = q_all.shape[0] / q_to_bags.shape[0]
        num_terms = has_term_all.sum().clamp(min=1).to(compute_dtype)
        # Rows without a term are finite (see _excluded) and multiplied by 0: no value, zero gradient.
        return (row_loss * has_term).sum() * rows_share / num_terms


def _row_losses(q_to_bags: Tensor, bags_to_q: Tensor | None, positive: Tensor, offset: int, direction: str,
                excluded: float) -> Tensor:
    """``-log(positive / denominator)`` for each of the R rows; the denominators are in the module doc."""
    if direction == "v2x":
        return torch.logsumexp(q_to_bags, dim=1) - positive
    if direction == "symmetric":
        return 0.5 * (torch.logsumexp(q_to_bags, dim=1) + torch.logsumexp(bags_to_q, dim=1)) - positive
    if direction == "released":  # the whole row and the whole column block: the positives count twice
        return torch.logaddexp(torch.logsumexp(q_to_bags, dim=1), torch.logsumexp(bags_to_q, dim=1)) - positive
    # joint: the positives are already in q_to_bags; drop their second copy from the other videos' scores
    rows = torch.arange(q_to_bags.shape[0], device=q_to_bags.device)
    is_positive = torch.zeros_like(bags_to_q, dtype=torch.bool)
    is_positive[rows, rows + offset] = True
    other_videos = bags_to_q.masked_fill(is_positive, excluded)
    return torch.logaddexp(torch.logsumexp(q_to_bags, dim=1), torch.logsumexp(other_videos, dim=1)) - positive


# ----------------------------------------------------------------------------------------------------------------
# Public functional losses
# ----------------------------------------------------------------------------------------------------------------

def nce_loss(
    video: Tensor,
    audio: Tensor,
    *,
    temperature: float,
    audio_mask: Tensor | None = None,
    direction: Direction = "joint",
    local_loss: bool = True,
    gather_with_grad: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """NCE between paired video and audio embeddings (MMV's video-audio term in S_va).

    Args:
        video: ``[B, D]`` video embeddings (normalised here).
        audio: ``[B, D]`` audio embeddings (normalised here).
        temperature: tau; dot products of unit vectors are divided by it.
        audio_mask: ``[B]`` bool, False where the clip has no audio: no term for that sample, and its audio is
            never a negative. None: all present.
        direction: Which negatives enter the denominator (module doc); "joint" uses both kinds.
        local_loss: Under ``world_size > 1``, compute only this rank's rows (against all columns).
        gather_with_grad: Differentiate through the cross-rank gather (required for exact gradients).
        rank: This process's rank.
        world_size: Number of processes sharing the global batch; each passes its own ``[B, D]`` slice.

    Returns:
        Scalar loss: the mean over samples with audio (each rank's share of it under distribution, so that the
        mean over ranks is the global value and DDP-averaged gradients are the global-batch gradients).
    """
    if audio.ndim != 2:
        raise ValueError(f"expected audio embeddings [B, D], got shape {tuple(audio.shape)}")
    if audio_mask is None:
        audio_mask = torch.ones(audio.shape[0], dtype=torch.bool, device=audio.device)
    return _contrastive_loss(
        video, audio[:, None], audio_mask.reshape(-1, 1), None, temperature=temperature, direction=direction,
        local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)


def mil_nce_loss(
    video: Tensor,
    text: Tensor,
    text_mask: Tensor | None = None,
    *,
    temperature: float,
    video_mask: Tensor | None = None,
    direction: Direction = "joint",
    local_loss: bool = True,
    gather_with_grad: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """MIL-NCE between each video and its bag of K narrations P(x) (MMV's video-text term in S_vat).

    Args:
        video: ``[B, D]`` embeddings (normalised here). Any modality can take this role: the optional audio-text
            term passes audio.
        text: ``[B, K, D]`` embeddings of the K narrations of each clip, or ``[B, D]`` (K = 1).
        text_mask: ``[B, K]`` bool, which rows are real narrations; a sample with none has no text: no term and
            none of its rows are negatives. None: all real.
        temperature: tau.
        video_mask: ``[B]`` bool, False where the first argument's modality is absent (no term, not a negative).
            None: all present.
        direction: Which negatives enter the denominator (module doc); "joint" uses both kinds.
        local_loss: Under ``world_size > 1``, compute only this rank's rows (against all columns).
        gather_with_grad: Differentiate through the cross-rank gather (required for exact gradients).
        rank: This process's rank.
        world_size: Number of processes sharing the global batch.

    Returns:
        Scalar loss, the mean over samples with text (each rank's share under distribution, as :func:`nce_loss`).
    """
    if text.ndim == 2:
        text = text[:, None]
        text_mask = None if text_mask is None else text_mask.reshape(-1, 1)
    if text_mask is None:
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    return _contrastive_loss(
        video, text, text_mask, video_mask, temperature=temperature, direction=direction, local_loss=local_loss,
        gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)


# ----------------------------------------------------------------------------------------------------------------
# The MMV objective
# ----------------------------------------------------------------------------------------------------------------

class MMVLoss(nn.Module):
    """``lambda_va * NCE(video, audio) + lambda_vt * MIL-NCE(video, narrations) [+ lambda_at * MIL-NCE(audio, text)]``.

    Takes the model's output dict directly: ``loss(**model_out, audio_mask=..., text_mask=...)``; keys the loss
    does not use are ignored. A term whose weight is 0 is not computed and not returned.

    Args:
        lambda_va: Weight of the video-audio NCE (in S_va).
        lambda_vt: Weight of the video-text MIL-NCE (in S_vat for FAC).
        temperature: tau (0.07 in the paper, section 2).
        direction: Negatives used by every term (see :mod:`mmv.losses`); "joint" is MIL-NCE's.
        lambda_at: Weight of an optional audio-text MIL-NCE on ``aud_embd_totxt`` and ``txt_embd_toaud`` (MMV uses
            none; default 0).
        local_loss: Each rank computes only its own rows (the scheme that scales; see :func:`gather_features`).
        gather_with_grad: Differentiate through the cross-rank gather.
        rank: This process's rank (explicit: the loss never inspects torch.distributed itself).
        world_size: Number of processes.
    """

    def __init__(
        self,
        lambda_va: float = 1.0,
        lambda_vt: float = 1.0,
        temperature: float = 0.07,
        direction: Direction = "joint",
        local_loss: bool = True,
        gather_with_grad: bool = True,
        rank: int = 0,
        world_size: int = 1,
        lambda_at: float = 0.0,
    ) -> None:
        super().__init__()
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.lambda_va, self.lambda_vt, self.lambda_at = lambda_va, lambda_vt, lambda_at
        self.temperature = temperature
        self.direction = direction
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.rank, self.world_size = rank, world_size

    def extra_repr(self) -> str:
        return (f"lambda_va={self.lambda_va}, lambda_vt={self.lambda_vt}, lambda_at={self.lambda_at}, "
                f"temperature={self.temperature}, direction={self.direction!r}, local_loss={self.local_loss}, "
                f"rank={self.rank}, world_size={self.world_size}")

    def forward(
        self,
        *,
        vid_embd_toaud: Tensor | None = None,
        aud_embd_tovid: Tensor | None = None,
        vid_embd_totxt: Tensor | None = None,
        txt_embd_tovid: Tensor | None = None,
        aud_embd_totxt: Tensor | None = None,
        txt_embd_toaud: Tensor | None = None,
        audio_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
        **unused: Tensor,
    ) -> dict[str, Tensor]:
        """Computes the weighted terms.

        Args:
            vid_embd_toaud: ``[B, D_va]`` video in the video-audio space.
            aud_embd_tovid: ``[B, D_va]`` audio in the video-audio space.
            vid_embd_totxt: ``[B, D_vt]`` video in the video-text space.
            txt_embd_tovid: ``[B, K, D_vt]`` (or ``[B, D_vt]``) narrations in the video-text space.
            aud_embd_totxt: ``[B, D_at]`` audio in the audio-text space (only with ``lambda_at > 0``).
            txt_embd_toaud: ``[B, K, D_at]`` (or ``[B, D_at]``) text in the audio-text space (ditto).
            audio_mask: ``[B]`` bool, False for clips without audio. None: all have audio.
            text_mask: ``[B, K]`` bool, which narrations are real; all False: no text. None: all real.
            **unused: Other model outputs (``vid_repr`` ...), ignored.

        Returns:
            ``{"loss": total, "nce_va": ..., "milnce_vt": ..., "milnce_at": ...}`` (unweighted terms; only those
            with a non-zero weight).
        """
        common = dict(temperature=self.temperature, direction=self.direction, local_loss=self.local_loss,
                      gather_with_grad=self.gather_with_grad, rank=self.rank, world_size=self.world_size)
        terms: dict[str, Tensor] = {}
        total = None
        if self.lambda_va:
            video, audio = _require("va", vid_embd_toaud=vid_embd_toaud, aud_embd_tovid=aud_embd_tovid)
            terms["nce_va"] = nce_loss(video, audio, audio_mask=audio_mask, **common)
            total = self.lambda_va * terms["nce_va"]
        if self.lambda_vt:
            video, text = _require("vt", vid_embd_totxt=vid_embd_totxt, txt_embd_tovid=txt_embd_tovid)
            terms["milnce_vt"] = mil_nce_loss(video, text, text_mask, **common)
            total = _add(total, self.lambda_vt * terms["milnce_vt"])
        if self.lambda_at:
            audio, text = _require("at", aud_embd_totxt=aud_embd_totxt, txt_embd_toaud=txt_embd_toaud)
            terms["milnce_at"] = mil_nce_loss(audio, text, text_mask, video_mask=audio_mask, **common)
            total = _add(total, self.lambda_at * terms["milnce_at"])
        if total is None:
            raise ValueError("all loss weights are 0: nothing to compute")
        return {"loss": total, **terms}


def _require(term: str, **outputs: Tensor | None) -> tuple[Tensor, ...]:
    """Returns the model outputs a term needs, or names those that are missing."""
    missing = [name for name, tensor in outputs.items() if tensor is None]
    if missing:
        raise ValueError(f"the {term} term (lambda_{term} != 0) needs the model outputs {', '.join(missing)}; "
                         f"feed that modality to the model or set lambda_{term}=0")
    return tuple(outputs.values())


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term
