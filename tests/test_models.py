"""Model behaviour: padding, shift layout, graphs and routing, absent modalities, creation by name, save/load."""
from __future__ import annotations

import copy
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmv
from mmv.convert.haiku import ConversionError, haiku_to_state_dict, leaf_table
from mmv.models.heads import EmbeddingHead, HeadConfig, parse_head_mode
from mmv.models import winograd
from mmv.models.layers import Conv2dSame, Conv3dSame, MaxPoolSame, conv_bn, same_padding
from mmv.models.tsm_resnet import shift_in_place_layout, swap_shifted_channels, temporal_shift


pytestmark = pytest.mark.usefixtures("two_torch_threads")  # the big models run on two threads
ALL_KEYS = {"vid_repr", "aud_repr", "txt_repr", "vid_embd_toaud", "vid_embd_totxt", "aud_embd_tovid",
            "aud_embd_totxt", "txt_embd_tovid", "txt_embd_toaud"}


def tiny_inputs(batch: int = 2, frames: int = 4, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, frames, size, size, 3, generator=g)
    audio = torch.randn(batch, 48, 40, generator=g)
    word_ids = torch.randint(1, 2048, (batch, 16), generator=g)
    return video, audio, word_ids


# ---------------------------------------------------------------------------------------------------------------
# 'SAME' padding
@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [(8, 2, 1, (0, 1)), (32, 4, 1, (1, 2)), (64, 7, 2, (2, 3)), (16, 3, 2, (0, 1)), (15, 3, 2, (1, 1)), (5, 1, 2, (0, 0))],
)
def test_same_padding_matches_xla_examples(size, kernel, stride, expected) -> None:
    # The first four are the worked examples of the official reference README.
    assert same_padding(size, kernel, stride) == expected


def test_conv_same_equals_explicit_tf_formula() -> None:
    """Brute force: pad by the TF formula written out here, then a 'valid' conv; output size ceil(in / stride)."""
    torch.manual_seed(0)
    for size, k, s in [(13, 4, 2), (16, 3, 2), (9, 7, 2), (10, 2, 1)]:
        conv = Conv2dSame(3, 5, k, s)
        x = torch.randn(2, 3, size, size + 1)
        pads = []
        for n in (size + 1, size):  # last axis first for F.pad
            out = math.ceil(n / s)
            total = max((out - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        ref = F.conv2d(F.pad(x, pads), conv.weight, stride=s)
        torch.testing.assert_close(conv(x), ref)
        assert conv(x).shape[-2:] == (math.ceil(size / s), math.ceil((size + 1) / s))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last_3d])
def test_max_pool_same_equals_brute_force_windows(memory_format, requires_grad) -> None:
    """Every size/kernel/stride mix against windows cut out of the -inf-padded input by the TF formula (both the
    in-place inference path and the autograd path)."""
    torch.manual_seed(0)
    for size in (5, 6, 7, 8):
        for kernel, stride in [((3, 3, 3), (1, 1, 1)), ((3, 3, 3), (2, 2, 2)), ((1, 3, 3), (1, 2, 2)),
                               ((2, 2, 2), (2, 2, 2)), ((2, 3, 1), (1, 2, 1)), ((3, 1, 3), (2, 1, 1))]:
            x = torch.randn(2, 3, size, size + 1, size + 2).contiguous(memory_format=memory_format)
            x.requires_grad_(requires_grad)
            pads = []
            for n, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)
                pads += [total // 2, total - total // 2]
            windows = F.pad(x, pads, value=float("-inf"))
            for dim, (k, s) in enumerate(zip(kernel, stride)):
                windows = windows.unfold(2 + dim, k, s)
            expected = windows.amax(dim=(-3, -2, -1))
            pooled = MaxPoolSame(kernel, stride)(x)
            torch.testing.assert_close(pooled, expected, rtol=0, atol=0,
                                       msg=f"size {size}, kernel {kernel}, stride {stride}")
            if requires_grad:  # the gradient reaches exactly the winning cells (random inputs: no ties)
                (grad,) = torch.autograd.grad(pooled.sum(), x)
                (expected_grad,) = torch.autograd.grad(expected.sum(), x)
                torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last_3d])
def test_conv3d_same_equals_explicit_tf_formula(memory_format) -> None:
    """Separable kernels run as 2D convolutions of views on CPU: same result as a padded 'valid' conv3d."""
    torch.manual_seed(0)
    for kernel, stride in [((1, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)), ((3, 1, 1), (1, 1, 1)),
                           ((3, 1, 1), (2, 1, 1)), ((1, 1, 1), (1, 1, 1)), ((2, 4, 4), (1, 1, 1)), ((3, 3, 3), (2, 2, 2))]:
        # float64: the gradients sum many products, in another order than conv3d's; float32 rounding would show.
        conv = Conv3dSame(4, 6, kernel, stride, bias=True).double()
        x = torch.randn(2, 4, 5, 9, 8, dtype=torch.float64).contiguous(memory_format=memory_format)
        pads = []
        for n, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        x.requires_grad_(True)
        expected = F.conv3d(F.pad(x, pads), conv.weight, conv.bias, stride=stride)
        out = conv(x)
        where = f"kernel {kernel}, stride {stride}"
        torch.testing.assert_close(out, expected, msg=lambda m: f"{where}: {m}")
        # Training goes through the same views: the gradients must be those of the 3D convolution.
        upstream = torch.randn_like(expected)
        grads = torch.autograd.grad(out, (x, conv.weight), upstream)
        expected_grads = torch.autograd.grad(expected, (x, conv.weight), upstream)
        for name, got, want in zip(("input", "weight"), grads, expected_grads):
            torch.testing.assert_close(got, want, msg=lambda m: f"{name} gradient, {where}: {m}")


def test_max_pool_same_never_picks_padding() -> None:
    x = -torch.rand(1, 1, 5, 6, 6) - 1.0  # all negative: a zero pad would win
    y = MaxPoolSame((3, 3, 3), (2, 2, 2))(x)
    assert y.shape[-3:] == (3, 3, 3)
    assert (y < 0).all()
    conv = Conv3dSame(1, 1, (2, 4, 4), (1, 1, 1))
    assert conv(x).shape == x.shape


# ---------------------------------------------------------------------------------------------------------------
# Temporal shift: the official layout, checked against a loop written from its description
def test_temporal_shift_official_layout() -> None:
    b, t, c = 2, 5, 16
    x = torch.randn(b * t, c, 3, 3)
    y = temporal_shift(x, t, 0.125).reshape(b, t, c, 3, 3)
    xr = x.reshape(b, t, c, 3, 3)
    n = c // 8
    for bi in range(b):
        for ti in range(t):
            for ci in range(c):
                if ci < n:  # the last n channels of frame t+1
                    ref = xr[bi, ti + 1, c - n + ci] if ti + 1 < t else torch.zeros(3, 3)
                elif ci >= c - n:  # the first n channels of frame t-1
                    ref = xr[bi, ti - 1, ci - (c - n)] if ti >= 1 else torch.zeros(3, 3)
                else:
                    ref = xr[bi, ti, ci]
                torch.testing.assert_close(y[bi, ti, ci], ref)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_in_place_shift_with_swapped_weights_equals_the_official_shift(memory_format) -> None:
    """The fast shift keeps channels in place; a 1x1 conv with swapped weight columns then sees the official shift."""
    b, t, c, n = 2, 5, 16, 2
    x = torch.randn(b * t, c, 3, 4).contiguous(memory_format=memory_format)
    weight = torch.randn(8, c, 1, 1)
    expected = F.conv2d(temporal_shift(x, t, n / c), weight)
    shifted = shift_in_place_layout(x, t, n)
    torch.testing.assert_close(F.conv2d(shifted, swap_shifted_channels(weight, n)), expected)
    assert shifted.is_contiguous(memory_format=memory_format)
    original = x.clone()
    result = shift_in_place_layout(x, t, n, inplace=True)
    assert result.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, shifted)
    assert not torch.equal(x, original)


def test_tsm_inference_path_equals_the_autograd_path() -> None:
    """In-place shift and ReLUs at inference; the autograd path (out of place) gives the same output and gradients
    that reach the input through every block."""
    model = mmv.create_model("mmv_tiny_tsm").video_backbone.eval()
    video, _, _ = tiny_inputs(frames=6)
    with torch.inference_mode():
        fast = model(video)
    video = video.clone().requires_grad_(True)
    slow = model(video)
    torch.testing.assert_close(slow.detach(), fast, rtol=1e-5, atol=1e-6)
    slow.sum().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0
    model.train()
    model(video).square().sum().backward()  # batch statistics, out-of-place shift: autograd must not complain


@pytest.mark.parametrize("size", [(14, 14), (7, 9), (8, 8), (5, 3), (1, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_winograd_conv3x3_equals_float64_convolution(size, with_bias, relu) -> None:
    """F(4x4, 3x3) against a float64 'SAME' convolution (then a ReLU), for sizes that fill whole tiles and sizes
    that leave a partial tile (cropped) or less than one tile."""
    torch.manual_seed(0)
    c, k = 256, 272
    x = torch.randn(3, c, *size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3) / (3 * c**0.5)
    bias = torch.randn(k) if with_bias else None
    assert winograd.applies(x, weight, (1, 1))
    out = winograd.conv3x3(x, winograd.transform_weight(weight), bias, relu=relu)
    expected = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    if relu:
        assert (expected < 0).any()  # the ReLU has something to do
        expected = expected.clamp(min=0)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.double() - expected).abs().max() <= 2e-5 * expected.abs().max()


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, raised while inductor loads
def test_conv_bn_winograd_path_under_torch_compile() -> None:
    """``torch.compile`` of the BN-folded Winograd path (its functional output form) equals eager, ReLU included."""
    torch.manual_seed(0)
    conv, bn = Conv2dSame(256, 256, 3, 1).eval(), torch.nn.BatchNorm2d(256, eps=1e-5).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 256, 7, 7).contiguous(memory_format=torch.channels_last)  # 7x7: cropped partial tiles

    def layer(x: torch.Tensor) -> torch.Tensor:
        return conv_bn(conv, bn, x, relu=True)

    with torch.inference_mode():
        assert winograd.applies(x, conv.weight, conv.stride)
        eager = layer(x)
        compiled = torch.compile(layer, dynamic=False)(x)
    assert (eager == 0).any()
    assert compiled.shape == eager.shape
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_winograd_applies_only_to_wide_stride1_3x3_inference_on_cpu() -> None:
    x = torch.randn(2, 256, 8, 8).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(256, 256, 3, 3)
    assert winograd.applies(x, weight, (1, 1))
    assert not winograd.applies(x, weight, (2, 2))
    assert not winograd.applies(x.contiguous(), weight, (1, 1))  # channels-first input
    assert not winograd.applies(x[:, :128], weight[:128, :128], (1, 1))  # narrow: the direct convolution wins
    assert not winograd.applies(x, torch.randn(256, 256, 1, 1), (1, 1))
    assert not winograd.applies(x.double(), weight.double(), (1, 1))


def test_conv_bn_winograd_cache_follows_the_weights() -> None:
    """At inference conv_bn folds the BN and takes the Winograd path with a cached transformed weight; the cache
    must be rebuilt when the weights change (load_state_dict writes in place), and training must not use it."""
    torch.manual_seed(0)
    conv, bn = Conv2dSame(256, 256, 3, 1), torch.nn.BatchNorm2d(256, eps=1e-5)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    conv.eval(), bn.eval()
    x = torch.randn(2, 256, 10, 10).contiguous(memory_format=torch.channels_last)

    def reference() -> torch.Tensor:
        with torch.no_grad():
            return bn(F.conv2d(x.double(), conv.conv.weight.double(), padding=1).float())

    with torch.no_grad():
        first = conv_bn(conv, bn, x)
    assert "_winograd_cache" in conv.__dict__
    torch.testing.assert_close(first, reference(), rtol=1e-4, atol=1e-4)
    state = {k: v * 0.5 for k, v in conv.state_dict().items()}
    conv.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(conv_bn(conv, bn, x), reference(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        bn.running_mean.add_(1.0)
        torch.testing.assert_close(conv_bn(conv, bn, x), reference(), rtol=1e-4, atol=1e-4)
    # With autograd recording, the direct convolution runs and gradients reach the weight.
    out = conv_bn(conv, bn, x)
    out.sum().backward()
    assert conv.conv.weight.grad is not None and conv.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("channels, kernel, stride", [(256, 3, 1), (16, 3, 1), (16, 3, 2), (16, 1, 1)])
@pytest.mark.parametrize("mode", ["train", "eval", "eval_no_grad"])
def test_conv_bn_relu_equals_relu_of_bn_of_conv(channels, kernel, stride, mode) -> None:
    """``conv_bn(..., relu=True)`` on each path (batch statistics; folded BN under autograd; folded BN at inference,
    which is the Winograd path for the 256-channel 3x3) against ``relu(bn(conv(x)))`` computed in float64."""
    torch.manual_seed(0)
    conv, bn = Conv2dSame(channels, channels, kernel, stride), torch.nn.BatchNorm2d(channels, eps=1e-5)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, channels, 9, 9).contiguous(memory_format=torch.channels_last)
    conv.train(mode == "train"), bn.train(mode == "train")
    reference_bn = copy.deepcopy(bn).double()
    with torch.no_grad():
        expected = torch.relu(reference_bn(conv.conv_with(x.double(), conv.weight.double(), None)))
    with torch.set_grad_enabled(mode != "eval_no_grad"):
        out = conv_bn(conv, bn, x, relu=True)
    assert (expected == 0).any() and (expected > 0).any()
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    if mode == "train":  # the running statistics moved exactly as without the ReLU
        torch.testing.assert_close(bn.running_mean.double(), reference_bn.running_mean)


def test_s3dg_fused_pointwise_branches_equal_the_separate_units() -> None:
    """At inference the three 1x1x1 units of an Inception block run as one stacked convolution."""
    torch.manual_seed(0)
    model = mmv.create_model("mmv_tiny_s3dg").video_backbone
    for module in model.modules():  # non-trivial running statistics, so that folding matters
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    block = model.blocks["Mixed_3b"]
    x = torch.rand(2, model.blocks["Mixed_3b"].branch_0.convs[0].conv.in_channels, 4, 8, 8)
    with torch.no_grad():
        reference = torch.cat([block.branch_0(x), block.branch_1b(block.branch_1a(x)),
                               block.branch_2b(block.branch_2a(x)), block.branch_3(block.branch_3_pool(x))], dim=1)
        torch.testing.assert_close(block(x), reference, rtol=1e-5, atol=1e-6)
    model.train()
    x.requires_grad_(True)
    block(x).square().sum().backward()  # in training the gating is out of place: autograd must not complain
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_tsm_time_reversal_changes_output() -> None:
    model = mmv.create_model("mmv_tiny_tsm").eval()
    video, _, _ = tiny_inputs(frames=6)
    with torch.no_grad():
        a = model(video=video)["vid_repr"]
        b = model(video=video.flip(1))["vid_repr"]
    assert not torch.allclose(a, b, atol=1e-6), "the shift must make the TSM output depend on frame order"


# ---------------------------------------------------------------------------------------------------------------
# Heads and graphs
def test_head_modes() -> None:
    assert parse_head_mode("linear") == []
    assert parse_head_mode("mlp@512@128") == [512, 128]
    for bad in ("mlp", "mlp@", "mlp@x", "conv@3", "mlp@0"):
        with pytest.raises(ValueError):
            parse_head_mode(bad)
    head = EmbeddingHead(10, 4, HeadConfig("mlp@8@6", bn_out=True))
    assert [m.out_features for m in head.hidden] == [8, 6] and head.proj.bias is None
    assert head(torch.randn(3, 2, 10)).shape == (3, 2, 4)
    assert EmbeddingHead(10, 4, HeadConfig("linear")).proj.bias is not None


@pytest.mark.parametrize("name", ["mmv_tiny_s3dg", "mmv_tiny_tsm"])
@pytest.mark.parametrize("graph", ["fac", "shared", "disjoint"])
def test_tiny_models_forward_backward(name, graph) -> None:
    model = mmv.create_model(name, graph=graph)
    video, audio, word_ids = tiny_inputs(batch=3)
    out = model(video=video, audio=audio, word_ids=word_ids)
    expected = ALL_KEYS - ({"aud_embd_totxt", "txt_embd_toaud"} if graph != "shared" else set())
    assert set(out) == expected  # training mode, no audio-text heads in the tiny models
    loss = sum(v.float().pow(2).mean() for v in out.values())
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert model.text_backbone.embed.weight.grad is None  # frozen word embeddings


def test_graph_spaces_and_shapes() -> None:
    video, audio, word_ids = tiny_inputs()
    for graph in ("fac", "shared", "disjoint"):
        model = mmv.create_model("mmv_tiny_s3dg", graph=graph).eval()
        with torch.no_grad():
            out = model(video=video, audio=audio, word_ids=word_ids)
        va, vt = model.cfg.va_dim, model.cfg.vt_dim
        if graph == "shared":
            assert out["vid_embd_toaud"] is out["vid_embd_totxt"] and out["vid_embd_totxt"].shape == (2, vt)
            assert out["aud_embd_tovid"] is out["aud_embd_totxt"]
            assert out["txt_embd_tovid"] is out["txt_embd_toaud"]
        else:
            assert out["vid_embd_toaud"].shape == (2, va) and out["vid_embd_totxt"].shape == (2, vt)
        if graph == "disjoint":
            assert "aud_embd_totxt" not in out and "txt_embd_toaud" not in out  # property iii fails
        if graph == "fac":
            assert out["aud_embd_totxt"].shape == (2, vt)  # audio reaches S_vat at inference


def test_fac_routes_audio_through_video_head_at_inference() -> None:
    """FAC: aud_embd_totxt = vis_embd(relu(aud_embd_tovid)), the video's va→vat head, in eval mode."""
    model = mmv.create_model("mmv_tiny_s3dg").eval()
    _, audio, _ = tiny_inputs()
    with torch.no_grad():
        out = model(audio=audio)
        ref = model.heads["vis_embd"](torch.relu(out["aud_embd_tovid"]))
        vid = model(video=tiny_inputs()[0])
        ref_v = model.heads["vis_embd"](torch.relu(vid["vid_embd_toaud"]))
    torch.testing.assert_close(out["aud_embd_totxt"], ref)
    torch.testing.assert_close(vid["vid_embd_totxt"], ref_v)


def test_fac_training_mode_keeps_video_bn_statistics() -> None:
    model = mmv.create_model("mmv_tiny_s3dg", audio_text_heads=True).train()
    _, audio, _ = tiny_inputs()
    before = model.heads["vis_embd"].bn_out.running_mean.clone()
    out = model(audio=audio)
    assert torch.equal(model.heads["vis_embd"].bn_out.running_mean, before)
    assert out["aud_embd_totxt"].shape[-1] == model.cfg.at_dim  # from audio2txt_embd, as the official graph


def test_absent_modalities_return_only_computable_outputs() -> None:
    model = mmv.create_model("mmv_tiny_s3dg").eval()
    video, audio, word_ids = tiny_inputs()
    with torch.no_grad():
        assert set(model(video=video)) == {"vid_repr", "vid_embd_toaud", "vid_embd_totxt"}
        assert set(model(audio=audio)) == {"aud_repr", "aud_embd_tovid", "aud_embd_totxt"}
        assert set(model(word_ids=word_ids)) == {"txt_repr", "txt_embd_tovid"}
        assert model() == {}
        full = model(video=video, audio=audio, word_ids=word_ids)
        # Each output depends only on its own modality.
        torch.testing.assert_close(model(video=video)["vid_embd_totxt"], full["vid_embd_totxt"])


def test_two_modality_models() -> None:
    va = mmv.create_model("mmv_tiny_s3dg", modalities=("video", "audio"))
    vt = mmv.create_model("mmv_tiny_s3dg", modalities=("video", "text"))
    assert va.text_backbone is None and vt.audio_backbone is None
    video, audio, word_ids = tiny_inputs()
    assert "vid_embd_toaud" in va(video=video, audio=audio) and "vid_embd_totxt" not in va(video=video)
    out = vt.eval()(video=video, word_ids=word_ids)
    assert out["vid_embd_totxt"].shape == out["txt_embd_tovid"].shape
    with pytest.raises(ValueError, match="no audio branch"):
        vt(audio=audio)


def test_multiple_narrations_per_clip() -> None:
    model = mmv.create_model("mmv_tiny_s3dg").eval()
    ids = torch.randint(1, 2048, (2, 5, 16))
    with torch.no_grad():
        out = model(word_ids=ids)
        single = model(word_ids=ids[:, 3])
    assert out["txt_embd_tovid"].shape == (2, 5, model.cfg.vt_dim)
    torch.testing.assert_close(out["txt_embd_tovid"][:, 3], single["txt_embd_tovid"])


def test_audio_accepts_trailing_channel_and_rejects_bad_shapes() -> None:
    model = mmv.create_model("mmv_tiny_s3dg").eval()
    _, audio, _ = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(audio=audio)["aud_repr"], model(audio=audio[..., None])["aud_repr"])
    with pytest.raises(ValueError, match="log-mel"):
        model(audio=audio[:, None, :, :, None])
    with pytest.raises(ValueError, match="deflate"):
        model(video=torch.rand(2, 32, 32, 3))
    with pytest.raises(ValueError, match="even T, H and W"):
        model(video=torch.rand(2, 3, 32, 32, 3))


def test_encode_spaces() -> None:
    model = mmv.create_model("mmv_tiny_s3dg").eval()
    video, audio, word_ids = tiny_inputs()
    with torch.no_grad():
        full = model(video=video, audio=audio, word_ids=word_ids)
        torch.testing.assert_close(model.encode_video(video, "va"), full["vid_embd_toaud"])
        torch.testing.assert_close(model.encode_video(video, "vat"), full["vid_embd_totxt"])
        torch.testing.assert_close(model.encode_audio(audio, "vt"), full["aud_embd_totxt"])
        torch.testing.assert_close(model.encode_text(word_ids), full["txt_embd_tovid"])
        torch.testing.assert_close(model.encode_video(video, "repr"), full["vid_repr"])
    with pytest.raises(ValueError, match="no 'txt_embd_toaud'"):
        model.encode_text(word_ids, "va")
    with pytest.raises(ValueError, match="space"):
        model.encode_video(video, "xyz")


def test_registry_and_config_errors() -> None:
    assert {"mmv_fac_s3dg", "mmv_fac_tsm_resnet50", "mmv_fac_tsm_resnet50x2"} <= set(mmv.list_models())
    tiny = mmv.list_models("mmv_tiny*")
    assert {"mmv_tiny_s3dg", "mmv_tiny_tsm"} <= set(tiny) and all(name.startswith("mmv_tiny") for name in tiny)
    assert tiny == sorted(tiny)
    with pytest.raises(ValueError, match="unknown model"):
        mmv.create_model("nope")
    with pytest.raises(ValueError, match="graph"):
        mmv.create_model("mmv_tiny_s3dg", graph="star")
    with pytest.raises(ValueError, match="unknown MMVConfig fields"):
        mmv.create_model("mmv_tiny_s3dg", grpah="fac")


def test_paper_parameter_counts() -> None:
    """Table 2 of the paper: S3D-G 9.1M, TSM-50 23.5M, TSM-50x2 93.9M; audio ResNet50 23.5M."""
    expected = {"mmv_fac_s3dg": 9.1e6, "mmv_fac_tsm_resnet50": 23.5e6, "mmv_fac_tsm_resnet50x2": 93.9e6}
    for name, n in expected.items():
        with torch.device("meta"):
            counts = mmv.create_model(name).parameter_counts()
        assert abs(counts["video_backbone"] - n) < 0.05e6, name
        assert abs(counts["audio_backbone"] - 23.5e6) < 0.05e6


# ---------------------------------------------------------------------------------------------------------------
# Our format and the name tables
@pytest.mark.parametrize("form", ["dir", "file"])
def test_save_load_roundtrip(tmp_path, form) -> None:
    model = mmv.create_model("mmv_tiny_tsm", graph="disjoint").eval()
    with torch.no_grad():  # make BN statistics non-trivial so that they are checked too
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path / ("m" if form == "dir" else "m.safetensors")
    mmv.save(model, path)
    loaded = mmv.load(path)
    assert loaded.cfg == model.cfg and not loaded.training
    video, audio, word_ids = tiny_inputs()
    with torch.no_grad():
        a, b = model(video=video, audio=audio, word_ids=word_ids), loaded(video=video, audio=audio, word_ids=word_ids)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not list(tmp_path.glob("**/*.tmp"))


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        mmv.load(tmp_path / "nope")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        mmv.load(bad)


def test_haiku_table_is_a_bijection_and_errors_list_keys() -> None:
    model = mmv.create_model("mmv_tiny_s3dg", audio_text_heads=True)
    table = leaf_table(model)
    refs = [ref.collection + ":" + ref.key for ref in table.values()]
    assert len(refs) == len(set(refs))  # no two tensors read the same leaf
    # A Haiku tree made from the model itself converts back exactly (the inverse of the layouts).
    params: dict = {}
    state: dict = {}
    sd = model.state_dict()
    for key, ref in table.items():
        t = sd[key].numpy()
        if ref.layout == "conv":
            n = t.ndim
            t = np.transpose(t, (*range(2, n), 1, 0))
        elif ref.layout == "linear":
            t = t.T
        elif ref.layout == "conv1d_k1":
            t = t.T[None]
        (params if ref.collection == "params" else state).setdefault(ref.module, {})[ref.leaf] = t
    converted = haiku_to_state_dict(model, params, state)
    for key in table:
        assert torch.equal(converted[key], sd[key]), key
    # Missing, unexpected and wrongly shaped leaves are all listed.
    first = next(iter(params))
    leaf = next(iter(params[first]))
    broken = {m: dict(v) for m, v in params.items()}
    del broken[first][leaf]
    broken["text_audio_video/extra_module"] = {"w": np.zeros(3)}
    with pytest.raises(ConversionError, match=r"1 missing.*1 unexpected.*extra_module"):
        haiku_to_state_dict(model, broken, state)
    wrong = {m: dict(v) for m, v in params.items()}
    wrong[first][leaf] = np.zeros((1, 2, 3))
    with pytest.raises(ConversionError, match="wrong shape"):
        haiku_to_state_dict(model, wrong, state)
