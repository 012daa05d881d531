"""`oracle-kd` command line: parses, calls library functions, prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oracle_kd.io import InputError

from oracle_kd.tasks import TASKS

TASK_NAMES = sorted(TASKS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except InputError as e:
        print(f"oracle-kd: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # training stopped on purpose (non-finite loss) is reported the same way
        from oracle_kd.training import NonFiniteLoss

        if isinstance(e, NonFiniteLoss):
            print(f"oracle-kd: training stopped: {e}", file=sys.stderr)
            return 3
        raise
    except KeyboardInterrupt:
        print("oracle-kd: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


PRESET_HELP = "smoke, quick or full (default quick); a task may have more (speech: large), see oracle_kd/presets/"


def add_overrides(parser, more: str = "") -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help=f"override a preset value, e.g. models.oracle.target_context=5 (repeatable{more})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oracle-kd", description=__doc__)
    sub = p.add_subparsers(title="commands")

    e = sub.add_parser("experiment", help="the main job: data, both teachers, all student arms, diagnostics, report")
    e.add_argument("--task", required=True, choices=TASK_NAMES)
    e.add_argument("--preset", default="quick", help=PRESET_HELP)
    e.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the preset's)")
    e.add_argument("--out", default=None, help="output folder (default: runs/<task>-<preset>)")
    e.add_argument("--cache", default=None, help="data cache folder (default: $ORACLE_KD_CACHE or ~/.cache/oracle-kd)")
    e.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    e.add_argument("--no-progress", action="store_true")
    add_overrides(e, "; part of the experiment's identity in OUT/experiment.json")
    e.set_defaults(run=cmd_experiment)

    d = sub.add_parser("data", help="generate the default data set of a task")
    d.add_argument("task", choices=TASK_NAMES)
    d.add_argument("--out", default=None, help="cache folder (default: $ORACLE_KD_CACHE or ~/.cache/oracle-kd)")
    d.add_argument("--preset", default="quick", help=PRESET_HELP)
    d.set_defaults(run=cmd_data)

    t = sub.add_parser("train", help="one training run")
    t.add_argument("task", choices=TASK_NAMES)
    t.add_argument("--model", required=True, choices=["student", "conventional", "oracle"])
    t.add_argument("--preset", default="quick", help=PRESET_HELP)
    t.add_argument("--train-data", default=None, help="user training data (default: the preset's generated data)")
    t.add_argument("--val-data", default=None, help="user validation data (required with --train-data)")
    t.add_argument("--teacher", default=None, help="teacher checkpoint to distil from")
    t.add_argument("--kd", default="frame", choices=["frame", "guided"])
    t.add_argument("--tau", type=float, default=2.0)
    t.add_argument("--kd-weight", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--devices", type=int, default=1, help="processes per node (>1: DDP)")
    t.add_argument("--num-nodes", type=int, default=1)
    t.add_argument("--out", required=True)
    add_overrides(t)
    t.set_defaults(run=cmd_train)

    v = sub.add_parser("evaluate", help="metrics of a checkpoint on a data path; prints JSON")
    v.add_argument("checkpoint")
    v.add_argument("--data", required=True, help="scene text: a labels.tsv folder or an LMDB; speech: a JSON-lines manifest or a LibriSpeech-layout folder")
    v.add_argument("--json-out", default=None)
    v.add_argument("--batch-size", type=int, default=128)
    v.set_defaults(run=cmd_evaluate)

    r = sub.add_parser("recognize", help="read text images; prints path<TAB>text")
    r.add_argument("checkpoint")
    r.add_argument("images", nargs="+")
    r.add_argument("--skipped", default="skipped.tsv", help="where unreadable inputs are listed")
    r.set_defaults(run=cmd_recognize)

    a = sub.add_parser("transcribe", help="transcribe audio files; prints path<TAB>text and the real-time factor")
    a.add_argument("checkpoint")
    a.add_argument("audio", nargs="+")
    a.add_argument("--beam", type=int, default=0, help="beam width (0: greedy decoding)")
    a.add_argument("--lm", default=None, help="KenLM n-gram model (ARPA or binary) for beam search")
    a.add_argument("--alpha", type=float, default=0.5, help="LM weight")
    a.add_argument("--beta", type=float, default=1.0, help="word insertion bonus")
    a.add_argument("--skipped", default="skipped.tsv", help="where unreadable inputs are listed")
    a.set_defaults(run=cmd_transcribe)

    x = sub.add_parser("export", help="export a student for deployment")
    x.add_argument("checkpoint")
    x.add_argument("--format", default="onnx", choices=["onnx"])
    x.add_argument("--out", required=True)
    x.set_defaults(run=cmd_export)

    b = sub.add_parser("bench", help="performance benchmarks, written to a JSON file")
    b.add_argument("--task", default="scene-text", choices=TASK_NAMES)
    b.add_argument("--preset", default="quick", help=PRESET_HELP)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--out", default="bench.json")
    b.set_defaults(run=cmd_bench)
    return p


def cmd_experiment(args) -> int:
    from oracle_kd.experiment import run_experiment
    from oracle_kd.report import summary_table

    out = args.out or f"runs/{args.task}-{args.preset}"
    results = run_experiment(args.task, args.preset, args.seeds, out,
                             cache=Path(args.cache) if args.cache else None, progress=not args.no_progress,
                             threads=args.threads, overrides=args.overrides)
    print(summary_table(results))
    return 0


def cmd_data(args) -> int:
    from oracle_kd.config import load_preset
    from oracle_kd.experiment import default_cache
    from oracle_kd.tasks import get_task

    folder = get_task(args.task).prepare_data(load_preset(args.task, args.preset)["data"],
                                              Path(args.out) if args.out else default_cache())
    print(folder)
    return 0


def cmd_train(args) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from oracle_kd.train_command import train_one

    result = train_one(args)
    if rank_zero_only.rank == 0:  # under DDP every process returns here; one prints
        print(json.dumps(result, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from oracle_kd import diagnostics
    from oracle_kd.checkpoint import load_model
    from oracle_kd.io import atomic_write_json
    from oracle_kd.skips import SkipLog

    task, model, _ = load_model(args.checkpoint)
    skips = SkipLog()
    beside = Path(args.json_out).parent if args.json_out else Path(".")
    try:
        dataset = task.dataset(Path(args.data), None, skips)
    finally:  # a data set rejected whole still lists every skip (the terminal shows the first 20)
        skips.write(beside / "skipped.tsv")
    metrics, _ = diagnostics.evaluate(task, model, dataset, args.batch_size)
    metrics["skipped"] = len(skips)
    if args.json_out:
        atomic_write_json(args.json_out, metrics)
    print(json.dumps(metrics))
    return 0


def cmd_recognize(args) -> int:
    from oracle_kd.checkpoint import load_model
    from oracle_kd.inference import recognize
    from oracle_kd.skips import SkipLog

    task, model, _ = load_model(args.checkpoint)
    skips = SkipLog()
    for source, text in recognize(task, model, args.images, skips):
        print(f"{source}\t{text}")
    skips.write(args.skipped)
    return 1 if len(skips) and len(skips) == len(args.images) else 0


def cmd_transcribe(args) -> int:
    import time

    from oracle_kd.checkpoint import load_model
    from oracle_kd.decoding import BeamSearch
    from oracle_kd.inference import recognize
    from oracle_kd.skips import SkipLog

    task, model, _ = load_model(args.checkpoint)
    if task.name != "speech":
        raise InputError(f"{args.checkpoint} is a {task.name} model; transcribe reads speech models")
    decoder = None
    if args.beam or args.lm:
        decoder = BeamSearch(task.vocab.chars, beam_width=args.beam or 32, lm_path=args.lm, alpha=args.alpha, beta=args.beta)
    skips = SkipLog()
    start, audio_seconds = time.perf_counter(), 0.0
    for source, text, example in recognize(task, model, args.audio, skips, decoder=decoder, with_examples=True):
        audio_seconds += task.seconds(example)
        print(f"{source}\t{text}")
    elapsed = time.perf_counter() - start
    if audio_seconds:
        print(f"real-time factor {elapsed / audio_seconds:.4f} ({audio_seconds:.1f} s of audio in {elapsed:.2f} s)",
              file=sys.stderr)
    skips.write(args.skipped)
    return 1 if len(skips) and len(skips) == len(args.audio) else 0


def cmd_export(args) -> int:
    from oracle_kd.export import export_onnx

    print(export_onnx(args.checkpoint, args.out))
    return 0


def cmd_bench(args) -> int:
    from oracle_kd.bench import run_bench

    print(json.dumps(run_bench(args.task, args.preset, args.repeats, args.out), indent=2))
    return 0
