"""Deflation (paper §3.4): the video network turned into an image network."""
from __future__ import annotations

import copy

import pytest
import torch

import mmv
from mmv.models.s3dg import S3DG, S3DGConfig


pytestmark = pytest.mark.usefixtures("two_torch_threads")  # the big models run on two threads


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics so that equalities are not an accident of identity BNs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.exp(0.2 * torch.randn(m.running_var.shape, generator=g)))
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def test_deflated_tsm_equals_shift_off_network_on_one_frame() -> None:
    model = mmv.create_model("mmv_tiny_tsm").eval()
    _randomize_bn(model)
    shift_off = mmv.create_model("mmv_tiny_tsm", video_backbone_args={
        **model.cfg.video_backbone_args, "channel_shift_fraction": 0.0}).eval()
    shift_off.load_state_dict(model.state_dict())
    images = torch.rand(3, 32, 32, 3)
    with torch.no_grad():
        with_shift = model(video=images[:, None])["vid_repr"]
        deflated = mmv.deflate(copy.deepcopy(model))
        out = deflated(video=images)
        ref = shift_off(video=images[:, None])
    for key in ("vid_repr", "vid_embd_toaud", "vid_embd_totxt"):
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=0)
    # On a 1-frame clip the shift only brings zeros: the undeflated network differs (the boundary effect).
    assert not torch.allclose(with_shift, out["vid_repr"], atol=1e-5)


def test_deflated_s3d_equals_static_clip_away_from_temporal_padding() -> None:
    """Without gating (global over time) every op is local: interior time steps of a static clip equal the image."""
    torch.manual_seed(0)
    video_net = S3DG(S3DGConfig(width_mult=0.125, self_gating=False)).eval()
    _randomize_bn(video_net)
    image_net = copy.deepcopy(video_net)
    image_net.deflate_()
    images = torch.rand(2, 32, 32, 3)
    static = images[:, None].expand(-1, 96, -1, -1, -1)  # 96 frames → 12 time steps at the end of the network
    with torch.no_grad():
        clip_features = video_net.forward_features(static)  # [B, C, 12, 1, 1]
        image_features = image_net.forward_features(images[:, None])  # [B, C, 1, 1, 1]
    t = clip_features.shape[2]
    middle = clip_features[:, :, t // 2 - 1: t // 2 + 1]
    torch.testing.assert_close(middle, image_features.expand_as(middle), rtol=1e-4, atol=1e-5)
    # At the clip ends the zero padding of the temporal kernels changes the features: the paper's boundary effect.
    edge_gap = (clip_features[:, :, 0] - image_features[:, :, 0]).abs().max()
    assert edge_gap > 1e-3


def test_deflated_s3dg_with_gating_matches_static_clip_up_to_the_first_gate() -> None:
    torch.manual_seed(1)
    video_net = S3DG(S3DGConfig(width_mult=0.125)).eval()
    _randomize_bn(video_net)
    image_net = copy.deepcopy(video_net)
    image_net.deflate_()
    images = torch.rand(2, 32, 32, 3)
    with torch.no_grad():
        clip = video_net.forward_endpoints(images[:, None].expand(-1, 16, -1, -1, -1))
        img = image_net.forward_endpoints(images[:, None])
    # The stem's (2,4,4) kernel pads one step at the end of time; the 1x1 conv adds nothing: interior steps match.
    for name in ("Conv2d_1a_7x7", "MaxPool_2a_3x3", "Conv2d_2b_1x1"):
        interior = clip[name][:, :, :-1]
        torch.testing.assert_close(interior, img[name].expand_as(interior), rtol=1e-4, atol=1e-5)


def test_deflated_released_s3dg_accepts_images_and_saves(tmp_path) -> None:
    model = mmv.create_model("mmv_tiny_s3dg").eval()
    mmv.deflate(model)
    mmv.deflate(model)  # idempotent
    images = torch.rand(2, 32, 32, 3)
    with torch.no_grad():
        out = model(video=images)
    assert out["vid_embd_totxt"].shape == (2, model.cfg.vt_dim)
    mmv.save(model, tmp_path / "deflated")
    loaded = mmv.load(tmp_path / "deflated")
    assert loaded.deflated
    with torch.no_grad():
        torch.testing.assert_close(loaded(video=images)["vid_repr"], out["vid_repr"], rtol=0, atol=0)


def test_deflation_weights_are_temporal_sums() -> None:
    net = S3DG(S3DGConfig(width_mult=0.125))
    before = net.conv2c.convs[1].conv.weight.detach().clone()  # a (3,1,1) temporal kernel
    stem = net.conv1.convs[0].conv.weight.detach().clone()  # the (2,4,4) stem
    net.deflate_()
    torch.testing.assert_close(net.conv2c.convs[1].conv.weight, before.sum(dim=2, keepdim=True))
    torch.testing.assert_close(net.conv1.convs[0].conv.weight, stem.sum(dim=2, keepdim=True))
    assert net.conv1.convs[0].kernel_size == (1, 4, 4)


def test_deflate_rejects_unknown_backbones() -> None:
    model = mmv.create_model("mmv_tiny_s3dg")
    model.video_backbone = torch.nn.Identity()
    with pytest.raises(ValueError, match="cannot be deflated"):
        mmv.deflate(model)
