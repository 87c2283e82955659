"""Every protocol on a tiny demo corpus (``mmv eval demo``), each task beside its chance level."""
from __future__ import annotations

import json

import numpy as np
import pytest

from eval_fixtures import single_thread, tiny_model  # noqa: F401
from mmv.cli.main import main


@pytest.mark.slow
def test_eval_demo_runs_every_task_with_chance(tiny_model, tmp_path, single_thread):
    import mmv
    from mmv.demo.corpus import DemoCorpusConfig, corpus_records, generate_demo_corpus
    from mmv.data.tokenizer import build_vocabulary
    from mmv.demo.evaluate import caption_text
    from mmv.eval.metrics import retrieval_chance

    data = tmp_path / "demo"
    generate_demo_corpus(data, num_train=12, num_test=8, seed=0, workers=1, progress=False,
                         config=DemoCorpusConfig(duration=2.0))
    train = corpus_records(data, "train")
    build_vocabulary([caption_text(r["caption_path"]) for r in train], max_size=2048).save(tmp_path / "vocab.txt")
    model_dir = mmv.save(tiny_model, tmp_path / "model")
    out = tmp_path / "results"
    assert main(["eval", "demo", "--model", str(model_dir), "--data", str(data), "--vocab", str(tmp_path / "vocab.txt"),
                 "--frames", "8", "--passes", "1", "--windows", "2", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "demo.json").read_text())
    tasks = result["tasks"]
    assert set(tasks) == {"video_probe", "attribute_video_va", "audio_probe", "attribute_audio_va", "text_to_video",
                          "text_to_audio", "image_deflated", "image_naive", "image_video"}
    for name in ("video_probe", "audio_probe", "image_deflated", "image_naive", "image_video"):
        assert tasks[name]["chance"] == pytest.approx(10.0), name  # ten digits
    for name in ("attribute_video_va", "attribute_audio_va"):
        assert tasks[name]["chance"] == pytest.approx(25.0), name  # four motion directions / glides
    for name, task in tasks.items():
        assert 0.0 <= task["value"] <= 100.0 and task["margin"] == pytest.approx(task["value"] - task["chance"])
    test = corpus_records(data, "test")
    assert tasks["video_probe"]["detail"]["num_test"] == len(test)
    assert tasks["audio_probe"]["detail"]["num_test"] == sum(r["has_audio"] for r in test)
    # Retrieval: queries are the on-topic narrations; chance follows from the class counts of the candidates.
    t2v = tasks["text_to_video"]["detail"]
    labels = np.array([r["label"] for r in test])
    on_topic = [i for i, r in enumerate(test) if r["text_kind"] == "on_topic" and caption_text(r["caption_path"])]
    assert t2v["query_clip_index"] == on_topic
    expected = retrieval_chance(len(test), [(labels == labels[i]).sum() for i in on_topic])
    assert tasks["text_to_video"]["chance"] == pytest.approx(expected["R@1"])
    assert tasks["image_deflated"]["deflation_l1"]["trained"] <= tasks["image_deflated"]["deflation_l1"]["naive"]
    assert "| video_probe |" in (out / "demo.md").read_text()
