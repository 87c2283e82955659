"""Images through deflation: BN γ/β training, the image-folder probe and PASCAL VOC 2007 mAP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eval_fixtures import single_thread, tiny_model, write_image  # noqa: F401
from mmv.preprocess import ImagePreprocess
from mmv.eval.datasets import VOC_CLASSES, voc2007
from mmv.eval.deflation import DeflationConfig, bn_affine_parameters, train_deflated_bn
from mmv.eval.images import ImageEvalConfig, evaluate_image_folder, evaluate_voc2007, image_table, voc_map

CFG = ImageEvalConfig(spec=ImagePreprocess(32, 32), static_frames=4, C=1.0)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for split, count in (("train", 5), ("val", 2)):
        for label in range(3):
            for i in range(count):
                write_image(root / split / f"class{label}" / f"{i}.png", label, seed=1000 * label + 10 * i + len(split))
    (root / "train" / "class0" / "broken.png").write_bytes(b"not an image")
    return root


def test_deflated_bn_training_changes_only_bn_and_closes_the_gap(image_folder, tiny_model, single_thread):
    import mmv

    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cfg = DeflationConfig(num_frames=4, size=32, crop=32, epochs=3, batch_size=4, lr=3e-3)
    paths = sorted((image_folder / "train").rglob("*.png"))[:7]  # includes class0/broken.png
    result = train_deflated_bn(tiny_model, paths, cfg, progress=False)
    assert result.skipped.total == 1  # broken.png
    assert result.l1_trained < result.l1_naive
    assert result.model.deflated and not tiny_model.deflated
    for key, value in tiny_model.state_dict().items():  # the video model is untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    naive = mmv.deflate(mmv.create_model("mmv_tiny_s3dg"))
    naive.load_state_dict(mmv.deflate(_copy(tiny_model)).state_dict())
    trained_bn = {id(p) for p in bn_affine_parameters(result.model.video_backbone)}
    changed = [name for name, p in result.model.named_parameters()
               if not torch.equal(p, dict(naive.named_parameters())[name])]
    assert changed and all(id(dict(result.model.named_parameters())[n]) in trained_bn for n in changed)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def _reference_features(net, paths, static_frames=None) -> np.ndarray:
    """Independent preprocessing: Pillow decoding, torch's antialiased bilinear resize of the short side to 32
    (long side rounded down), centre crop 32, [0, 1] floats."""
    import torch.nn.functional as F
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float()
        h, w = pixels.shape[-2:]
        size = (32, w * 32 // h) if h <= w else (h * 32 // w, 32)
        resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        resized = resized.round().clamp(0, 255)[0].permute(1, 2, 0)
        top, left = (resized.shape[0] - 32) // 2, (resized.shape[1] - 32) // 2
        images.append(resized[top:top + 32, left:left + 32].to(torch.uint8).numpy())
    x = torch.from_numpy(np.stack(images)).float() / 255
    if static_frames:
        x = x[:, None].expand(-1, static_frames, -1, -1, -1)
    with torch.no_grad():
        return net.encode_video(x, space="repr").numpy()


def test_image_folder_probe_three_variants(image_folder, tiny_model, tmp_path, single_thread):
    import copy

    import mmv
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    deflation = train_deflated_bn(tiny_model, image_folder / "train",
                                  DeflationConfig(num_frames=4, size=32, crop=32, epochs=1, batch_size=8),
                                  progress=False)
    result = evaluate_image_folder(tiny_model, image_folder, trained=deflation.model, cfg=CFG, cache_dir=tmp_path,
                                   progress=False)
    assert set(result["variants"]) == {"naive", "trained", "video"}
    train = sorted(p for p in (image_folder / "train").rglob("*.png") if p.name != "broken.png")
    val = sorted((image_folder / "val").rglob("*.png"))
    train_y = [int(p.parent.name[-1]) for p in train]
    val_y = np.array([int(p.parent.name[-1]) for p in val])
    networks = {"naive": (mmv.deflate(copy.deepcopy(tiny_model)), None), "trained": (deflation.model, None),
                "video": (tiny_model, CFG.static_frames)}
    for name, (net, frames) in networks.items():
        variant = result["variants"][name]
        assert variant["num_test"] == 6 and variant["skipped"]["train"]["total"] == 1
        reference = make_pipeline(StandardScaler(), LinearSVC(C=CFG.C, dual=True, random_state=0))
        reference.fit(_reference_features(net, train, frames), train_y)
        expected = 100 * np.mean(reference.predict(_reference_features(net, val, frames)) == val_y)
        assert variant["top1"] == pytest.approx(expected), name
    assert result["chance"]["top1"] == pytest.approx(100 / 3)
    assert "deflation + trained BN" in image_table(result)


def _make_voc(root: Path) -> Path:
    """20 VOC class files; image i shows colour label i % 3 and is positive for class k when k % 3 == i % 3."""
    base = root / "VOCdevkit" / "VOC2007"
    for image_set, ids in (("trainval", range(0, 15)), ("test", range(100, 109))):
        for k, name in enumerate(VOC_CLASSES):
            lines = []
            for i in ids:
                flag = 1 if k % 3 == i % 3 else -1
                if i in (3, 104) and flag == -1 and k == 1:
                    flag = 0  # difficult: left out of training and scoring for this class
                lines.append(f"{i:06d} {flag:2d}")
            path = base / "ImageSets" / "Main" / f"{name}_{image_set}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
        for i in ids:
            write_image(base / "JPEGImages" / f"{i:06d}.jpg", i % 3, seed=i)
    return root


def test_voc2007_reader_and_map(tmp_path, tiny_model, single_thread):
    root = _make_voc(tmp_path / "voc")
    trainval = voc2007(root, "trainval")
    assert len(trainval.image_ids) == 15 and trainval.targets.shape == (15, 20)
    assert trainval.targets[3, 1] == 0 and trainval.targets[0, 0] == 1 and trainval.targets[0, 1] == -1
    result = evaluate_voc2007(tiny_model, root, variants=("video",), cfg=CFG, cache_dir=tmp_path, progress=False)
    variant = result["variants"]["video"]
    assert len(variant["per_class_AP"]) == 20 and variant["ap_method"] == "11point"
    # Reference: per class, StandardScaler + LinearSVC on non-difficult images, 11-point AP on non-difficult ones.
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from mmv.eval.metrics import average_precision

    test = voc2007(root, "test")
    train_x = _reference_features(tiny_model, trainval.paths, CFG.static_frames)
    test_x = _reference_features(tiny_model, test.paths, CFG.static_frames)
    for k, name in enumerate(VOC_CLASSES):
        keep, keep_test = trainval.targets[:, k] != 0, test.targets[:, k] != 0
        clf = make_pipeline(StandardScaler(), LinearSVC(C=CFG.C, dual=True, random_state=0))
        clf.fit(train_x[keep], trainval.targets[keep, k] > 0)
        ap = average_precision(clf.decision_function(test_x[keep_test]), test.targets[keep_test, k] > 0, "11point")
        assert variant["per_class_AP"][name] == pytest.approx(100 * ap, abs=1e-6), name
    assert result["chance"]["mAP"] == pytest.approx(np.mean([100 * 3 / 9] * 19 + [100 * 3 / 8]))


def test_voc_map_hand_computed_with_difficult():
    # One feature that ranks test images; class 0 positives are the two highest, one difficult in between.
    train_x = np.array([[0.0], [1.0], [2.0], [3.0]])
    train_t = np.array([[-1], [-1], [1], [1]])
    test_x = np.array([[3.0], [2.5], [2.0], [0.5], [0.0]])
    test_t = np.array([[1], [0], [-1], [1], [-1]])  # ranked: pos, (difficult), neg, pos, neg
    out = voc_map(train_x, train_t, test_x, test_t, C=10.0, ap_method="area", class_names=["c0"])
    # Without the difficult image: hits at ranks 1 and 3 -> AP = 0.5 * 1 + 0.5 * 2/3.
    assert out["per_class_AP"]["c0"] == pytest.approx(100 * (0.5 + 1 / 3))
