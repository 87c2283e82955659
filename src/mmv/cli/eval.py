"""``mmv eval TASK --model M --data DIR``: the paper's downstream protocols, each writing JSON plus a Markdown table."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

TASKS = {
    "ucf101": "video linear probe on UCF101 (ucfTrainTestlist/, UCF-101/<Class>/*.avi), splits 1-3",
    "hmdb51": "video linear probe on HMDB51 (testTrainMulti_7030_splits/, <class>/*.avi), splits 1-3",
    "video-folder": "video linear probe on <data>/{train,test}/<class>/* or <data>/<class>/*",
    "kinetics600": "video linear probe on Kinetics-600 (train.csv, validate.csv, clips <id>_<start>_<end>.*)",
    "esc50": "audio linear probe on ESC-50 (audio/*.wav, meta/esc50.csv), 5-fold cross-validation",
    "audio-folder": "audio linear probe on <data>/{train,test}/<class>/* or <data>/<class>/*",
    "audioset": "audio MLP on AudioSet, mAP (*_segments.csv, class_labels_indices.csv, clips <YTID>_<start>.*)",
    "msrvtt": "zero-shot retrieval on MSR-VTT 1k-A (MSRVTT_JSFUSION_test.csv, videos/all/*.mp4)",
    "youcook2": "zero-shot retrieval on YouCook2 validation (youcookii_annotations_trainval.json, raw_videos/)",
    "image-folder": "image linear probe through deflation on <data>/{train,val}/<class>/*",
    "voc2007": "PASCAL VOC 2007 classification mAP through deflation (VOCdevkit/VOC2007/)",
    "demo": "every protocol on the demo corpus ('mmv demo-data --out DIR'), each beside its chance level",
}

# Settings fixed by a task's published protocol, for the released models (whose own preprocessing is the released
# UCF101 protocol's, docs/models.md): DMVR's HMDB51 script takes 32 frames at 10 fps and a 200 crop; the ESC-50
# protocol cuts 2 s windows (docs/evaluation.md). Other models are evaluated on their own clips. Flags override both.
PROTOCOL_SETTINGS = {
    "hmdb51": {"video.fps": 10.0, "video.crop": 200},
    "esc50": {"audio.clip_seconds": 2.0},
}

DESCRIPTION = "Evaluate a frozen MMV model with one of the paper's downstream protocols.\n\nTasks:\n" + "\n".join(
    f"  {name:<13} {text}" for name, text in TASKS.items()) + """

Each task writes OUT/<task>.json (every number, options, skipped files) and OUT/<task>.md (a table), and
prints the table. A benchmark (ucf101, hmdb51, kinetics600, esc50, audioset, msrvtt, youcook2, voc2007) is
evaluated only on a complete copy: the coverage (files found of those listed, per split and class) is in the JSON
and the table, and a copy lacking listed files is refused unless --allow-partial (then every row says "partial").
Features are cached in OUT/cache (keyed by the model's weights and every option), so a rerun or a second
classifier setting costs only the classifier fit.

Clips are the model's own (the frames, crop, spectrogram and vocabulary it was trained with, stored with it; the
released models carry the released UCF101 protocol's: 32 frames at 12.5 fps, 224 crop). With a released model,
HMDB51 follows DMVR's protocol (10 fps, 200 crop) and ESC-50 cuts 2 s windows. The clip flags below override all
of this; every setting used, and each that differs from the model's, is written to OUT/<task>.json.

Protocol defaults follow the paper (docs/evaluation.md): 10 augmented training passes, 10 test windows,
StandardScaler + LinearSVC with the published C; retrieval with 4 windows per clip in S_vat, pessimistic ties.
kinetics600 and audioset write features to OUT/cache in chunks and train their classifier from there in bounded
memory (Kinetics-600: softmax regression, C chosen on held-out training clips; AudioSet: an MLP with 512 hidden
units on the full training set); the paper leaves these protocols open, our choices are in docs/evaluation.md.
Fine-tuning (the "FT" columns) is 'mmv finetune'."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="run a downstream evaluation protocol", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Example: mmv eval ucf101 --model models/mmv_s3d --data /data/ucf101 "
                                     "--out runs/ucf")
    p.add_argument("task", choices=sorted(TASKS), metavar="TASK", help="one of: " + ", ".join(TASKS))
    p.add_argument("--model", required=True, help="saved model (directory or .safetensors) or an architecture name")
    p.add_argument("--data", required=True, help="dataset root in the task's official layout")
    p.add_argument("--out", default="eval_results", help="results folder (default: eval_results)")
    p.add_argument("--cache", default=None, help="feature cache folder (default: OUT/cache; 'none' disables)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: 0, in the main process)")
    p.add_argument("--seed", type=int, default=0, help="seed of random windows, crops and C selection")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--allow-partial", action="store_true",
                   help="evaluate a benchmark copy that lacks some of the files its metadata lists; every result "
                        "is then marked partial (without it such a copy is refused before any feature is computed)")

    v = p.add_argument_group("video clips (probes and retrieval)")
    v.add_argument("--frames", type=int, default=None, help="frames per window (default: the model's)")
    v.add_argument("--fps", type=float, default=None, help="frame rate of a window (default: the model's)")
    v.add_argument("--min-resize", type=int, default=None, help="short side before cropping (default: the model's)")
    v.add_argument("--crop", type=int, default=None, help="crop side (default: the model's)")
    v.add_argument("--passes", type=int, default=None,
                   help="augmented training passes (default: 10; demo: 3; kinetics600: 1)")
    v.add_argument("--windows", type=int, default=None,
                   help="test windows per clip (default: 10 for probes, 4 for retrieval)")
    v.add_argument("--splits", default="1,2,3", help="official splits to run (default: 1,2,3)")
    v.add_argument("--video-root", default=None, help="HMDB51 videos folder when not under --data")

    c = p.add_argument_group("classifier")
    c.add_argument("--C", type=float, default=None, help="SVM C (default: the published value for UCF101/HMDB51, "
                   "selected on held-out training data elsewhere)")
    c.add_argument("--classifier", choices=("svm", "logreg", "torch"), default="svm",
                   help="svm: StandardScaler + LinearSVC (the paper's; default)")
    c.add_argument("--space", choices=("repr", "va", "vt"), default="repr",
                   help="probed representation (default: repr, the backbone output)")

    a = p.add_argument_group("audio")
    a.add_argument("--audio-seconds", type=float, default=None,
                   help="audio window length (default: the model's; ESC-50 with a released model: 2 s)")
    a.add_argument("--audio-windows", type=int, default=5, help="audio windows per clip (default: 5)")
    a.add_argument("--sample-rate", type=int, default=None, help="audio sample rate (default: the model's)")

    r = p.add_argument_group("retrieval")
    r.add_argument("--vocab", default=None,
                   help="a word vocabulary (default: the one stored with the model; text needs one)")
    r.add_argument("--ties", choices=("pessimistic", "optimistic", "average"), default="pessimistic",
                   help="how exact score ties rank (default: pessimistic)")
    r.add_argument("--directions", default="text->video,text->audio,audio->video",
                   help="comma-separated retrieval directions")

    i = p.add_argument_group("images")
    i.add_argument("--deflated", default=None, help="a BN-trained deflated model from 'mmv deflate' "
                   "(the 'trained' variant); without it that variant is skipped")
    i.add_argument("--variants", default="naive,trained,video", help="naive, trained, video (comma-separated)")
    i.add_argument("--static-frames", type=int, default=None,
                   help="frames of the static clip (default: the model's frames per window)")
    i.add_argument("--image-size", type=int, default=None, help="short side before cropping (default: the model's)")
    i.add_argument("--image-crop", type=int, default=None, help="image crop (default: the model's)")
    i.add_argument("--ap-method", choices=("11point", "area"), default="11point",
                   help="VOC AP: 11point (VOC 2007 devkit, default) or area")

    s = p.add_argument_group("kinetics600 and audioset (classifiers trained on features streamed from disk)")
    s.add_argument("--clip-root", default=None,
                   help="folder holding the clips (any depth) when not under --data, where the CSVs are")
    s.add_argument("--audioset-train", choices=("balanced", "unbalanced", "both"), default="both",
                   help="AudioSet training list(s) (default: both, the full training set)")
    s.add_argument("--mlp-hidden", default="512",
                   help="AudioSet MLP hidden widths, comma-separated; 0: a linear classifier (default: 512)")
    s.add_argument("--solver", choices=("adam", "lbfgs"), default="adam",
                   help="kinetics600: adam (mini-batches, default) or lbfgs (full batch, summed over chunks)")
    s.add_argument("--solver-epochs", type=int, default=10, help="passes of the classifier over the features "
                   "(default: 10)")
    s.add_argument("--chunk-items", type=int, default=4096,
                   help="clips per feature chunk on disk; bounds memory (default: 4096)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from mmv.cli.common import check_output_dir
    from mmv.eval.io import resolve_model, write_report

    check_output_dir(args.out)  # before features are computed for results that could not be written
    model = resolve_model(args.model, args.device)
    preprocess, settings = resolve_preprocess(args, model)
    out = Path(args.out)
    cache = None if args.cache == "none" else Path(args.cache or out / "cache")
    result, table = _dispatch(args, model, preprocess, cache)
    result["model"] = args.model
    result["preprocess"] = settings
    json_path, md_path = write_report(out, args.task, result, table)
    print(table)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def resolve_preprocess(args: argparse.Namespace, model: Any) -> tuple[Any, dict[str, Any]]:
    """The clips of this evaluation: the model's, then the task's published protocol (released models), then the
    flags; with the record written to the results (every setting used, and each one that differs from the model's
    with what changed it)."""
    preprocess = model.preprocess
    protocol = PROTOCOL_SETTINGS.get(args.task, {}) if preprocess.source == "released" else {}
    flags = {"video.num_frames": args.frames, "video.fps": args.fps, "video.min_resize": args.min_resize,
             "video.crop": args.crop, "audio.clip_seconds": args.audio_seconds, "audio.mel.sample_rate": args.sample_rate,
             "image.min_resize": args.image_size, "image.crop": args.image_crop}
    preprocess, by_protocol = preprocess.override(**{k: v for k, v in protocol.items() if flags.get(k) is None})
    preprocess, by_flag = preprocess.override(**flags)
    differs = {**{k: {**v, "by": "protocol"} for k, v in by_protocol.items()},
               **{k: {**v, "by": "flag"} for k, v in by_flag.items()}}
    for key, change in differs.items():
        print(f"{key}: {change['used']} instead of the model's {change['model']} (set by the {change['by']})")
    return preprocess, {"used": preprocess.to_dict(include_vocabulary=False), "source": model.preprocess.source,
                        "differs_from_model": differs}


def _tokenizer(args: argparse.Namespace, preprocess: Any) -> Any:
    """An explicit --vocab, else the model's own vocabulary, else None."""
    from mmv.eval.io import load_tokenizer

    if args.vocab:
        return load_tokenizer(args.vocab, max_words=preprocess.text.max_words)
    return preprocess.text.tokenizer().encode_batch if preprocess.text.vocabulary is not None else None


def _dispatch(args: argparse.Namespace, model: Any, preprocess: Any, cache: Path | None) -> tuple[dict[str, Any], str]:
    common = {"cache_dir": cache, "progress": not args.no_progress}
    task = args.task
    if task == "demo":
        from mmv.demo.evaluate import DemoEvalConfig, demo_table, evaluate_demo

        # A model created by name carries no preprocessing of its own: the demo then uses the corpus's clips
        # (16 frames unless --frames says otherwise).
        given = preprocess if preprocess.source != "default" else None
        if given is None and args.frames:
            from mmv.demo.corpus import read_corpus
            from mmv.demo.evaluate import corpus_preprocess

            given = corpus_preprocess(read_corpus(args.data), num_frames=args.frames)
        cfg = DemoEvalConfig(preprocess=given, train_passes=args.passes or 3, test_windows=args.windows or 4,
                             batch_size=args.batch_size)
        result = evaluate_demo(model, args.data, cfg=cfg, tokenizer=_tokenizer(args, preprocess), seed=args.seed,
                               **common)
        return result, demo_table(result)
    if task in ("ucf101", "hmdb51", "video-folder"):
        return _video_probe(args, model, preprocess.video, common)
    if task in ("esc50", "audio-folder"):
        return _audio_probe(args, model, preprocess.audio, common)
    if task in ("msrvtt", "youcook2"):
        return _retrieval(args, model, preprocess, common)
    if task in ("kinetics600", "audioset"):
        return _streaming(args, model, preprocess, common)
    return _images(args, model, preprocess, common)


def _video_probe(args, model, spec, common):
    from mmv.eval.linear_probe import VideoProbeConfig, evaluate_video_probe, probe_table

    cfg = VideoProbeConfig(spec=spec, train_passes=args.passes or 10, test_windows=args.windows or 10, C=args.C,
                           classifier=args.classifier, space=args.space, batch_size=args.batch_size,
                           num_workers=args.workers, seed=args.seed)
    dataset = {"video-folder": "folder"}.get(args.task, args.task)
    splits = tuple(int(s) for s in args.splits.split(","))
    result = evaluate_video_probe(model, args.data, dataset=dataset, splits=splits, cfg=cfg,
                                  video_root=args.video_root, allow_partial=args.allow_partial, **common)
    return result, probe_table(result)


def _audio_probe(args, model, spec, common):
    from mmv.eval.audio_probe import AudioProbeConfig, evaluate_audio_folder, evaluate_esc50
    from mmv.eval.linear_probe import probe_table

    cfg = AudioProbeConfig(spec=spec, windows=args.audio_windows, C=args.C, classifier=args.classifier,
                           space=args.space, batch_size=args.batch_size, num_workers=args.workers, seed=args.seed)
    if args.task == "esc50":
        result = evaluate_esc50(model, args.data, cfg=cfg, allow_partial=args.allow_partial, **common)
    else:
        result = evaluate_audio_folder(model, args.data, cfg=cfg, **common)
    return result, probe_table(result, "fold" if args.task == "esc50" else "split")


def _retrieval(args, model, preprocess, common):
    from mmv.eval.retrieval import RetrievalConfig, evaluate_msrvtt, evaluate_youcook2, retrieval_table

    directions = [d.strip() for d in args.directions.split(",") if d.strip()]
    tokenizer = _tokenizer(args, preprocess)
    if tokenizer is None:
        dropped = [d for d in directions if d.startswith("text")]
        if dropped:
            print(f"the model has no vocabulary and no --vocab was given: skipping {', '.join(dropped)}")
        directions = [d for d in directions if not d.startswith("text")]
    cfg = RetrievalConfig(spec=preprocess.video, audio=preprocess.audio, windows=args.windows or 4, ties=args.ties,
                          batch_size=args.batch_size, num_workers=args.workers)
    evaluate = evaluate_msrvtt if args.task == "msrvtt" else evaluate_youcook2
    result = evaluate(model, args.data, tokenizer, cfg=cfg, directions=directions, allow_partial=args.allow_partial,
                      **common)
    return result, retrieval_table(result)


def _images(args, model, preprocess, common):
    import mmv
    from mmv.eval.images import ImageEvalConfig, evaluate_image_folder, evaluate_voc2007, image_table

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    trained = mmv.load(args.deflated, map_location=args.device) if args.deflated else None
    if trained is None and "trained" in variants:
        print("no --deflated model given: skipping the 'trained' variant (make one with 'mmv deflate')")
        variants.remove("trained")
    cfg = ImageEvalConfig(spec=preprocess.image, static_frames=args.static_frames or preprocess.video.num_frames,
                          C=args.C, classifier=args.classifier, ap_method=args.ap_method, batch_size=args.batch_size,
                          num_workers=args.workers, seed=args.seed)
    if args.task == "voc2007":
        result = evaluate_voc2007(model, args.data, variants=variants, trained=trained, cfg=cfg,
                                  allow_partial=args.allow_partial, **common)
    else:
        result = evaluate_image_folder(model, args.data, variants=variants, trained=trained, cfg=cfg, **common)
    return result, image_table(result)


def _streaming(args, model, preprocess, common):
    """The two protocols whose features live on disk: Kinetics-600's linear probe and AudioSet's MLP."""
    from mmv.cli.common import UsageError

    if args.chunk_items < 1 or args.solver_epochs < 1:
        raise UsageError("--chunk-items and --solver-epochs must be at least 1")
    try:
        hidden = tuple(int(width) for width in args.mlp_hidden.split(",") if int(width) > 0)
    except ValueError:
        raise UsageError(f"--mlp-hidden takes comma-separated widths (0: linear), got {args.mlp_hidden!r}") from None
    common = {**common, "clip_root": args.clip_root, "allow_partial": args.allow_partial}
    if args.task == "kinetics600":
        from mmv.eval.kinetics import KineticsConfig, evaluate_kinetics600
        from mmv.eval.linear_probe import probe_table

        cfg = KineticsConfig(spec=preprocess.video, train_passes=args.passes or 1, test_windows=args.windows or 10,
                             solver=args.solver, epochs=args.solver_epochs, C=args.C, space=args.space,
                             extract_batch_size=args.batch_size, num_workers=args.workers,
                             chunk_items=args.chunk_items, seed=args.seed, device=args.device)
        result = evaluate_kinetics600(model, args.data, cfg=cfg, **common)
        return result, probe_table(result)
    from mmv.eval.audioset import TRAIN_SETS, AudioSetConfig, audioset_table, evaluate_audioset

    cfg = AudioSetConfig(spec=preprocess.audio, windows=args.audio_windows, train_sets=TRAIN_SETS[args.audioset_train],
                         hidden=hidden, epochs=args.solver_epochs, C=args.C, space=args.space,
                         extract_batch_size=args.batch_size, num_workers=args.workers, chunk_items=args.chunk_items,
                         seed=args.seed, device=args.device)
    result = evaluate_audioset(model, args.data, cfg=cfg, **common)
    return result, audioset_table(result)
