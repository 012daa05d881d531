"""`oracle-kd` command line: parses, calls library functions, prints."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import sys
from pathlib import Path

from oracle_kd import __version__
from oracle_kd.arguments import SEED, Parser, count, number
from oracle_kd.config import KD_METHODS, KDTerm
from oracle_kd.io import FULL, InputError
from oracle_kd.safety import check_writable_folder

from oracle_kd.tasks import TASKS
from oracle_kd.tracking import LOGGERS

TASK_NAMES = sorted(TASKS)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for the next allocation rather than hand it back
    to the system: a training step frees and allocates activations of megabytes each, and
    memory handed back and mapped anew costs a page fault per 4 KB on first touch. In a process
    that holds more than one model (the bench, an experiment's teachers) the speech teacher's
    step took 1.7 times as long (issue 16). The process keeps its peak memory instead. Other C
    libraries (musl, macOS, Windows): nothing is changed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # blocks up to 32 MB (glibc's most) from the heap, not mmap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap's free top is kept up to 1 GB


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    keep_freed_memory()
    if getattr(args, "threads", None):
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the processes it starts (data workers, DDP)
        torch.set_num_threads(args.threads)
    # Results go to stdout, alone, so that `oracle-kd train ... > r.json` is JSON: a command
    # prints them to args.stdout, and anything else printed meanwhile (Lightning's progress
    # bars and notices write to stdout) goes to stderr.
    args.stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return args.run(args) or 0
    except InputError as e:
        print(f"oracle-kd: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk outside the atomic writes (which say more): one line, not a traceback
        if e.errno not in FULL:
            raise
        print(f"oracle-kd: error: no space left on the device{f' writing {e.filename}' if e.filename else ''}; "
              "free some space and run the same command again", file=sys.stderr)
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


WORKERS_HELP = ("data loader worker processes that read and decode examples (0: the main process does; "
                "more stay up from epoch to epoch)")
PRESET_HELP = "smoke, quick or full (default quick); a task may have more (speech: large), see oracle_kd/presets/"


def add_overrides(parser, more: str = "") -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help=f"override a preset value, e.g. models.oracle.target_context=5 (repeatable{more})")


def add_threads(parser) -> None:
    """The options of every command that computes: its CPU threads and its progress bar."""
    parser.add_argument("--threads", type=count(1), default=None,
                        help="CPU threads of PyTorch and onnxruntime, and of the processes the command starts "
                             "(default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr)")


def add_cache(parser) -> None:
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="cache folder of generated data (default: $ORACLE_KD_CACHE or ~/.cache/oracle-kd)")


def add_engine(parser) -> None:
    """Where and how to train: Lightning's accelerator, devices, precision, loader workers."""
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, cuda, mps or auto")
    parser.add_argument("--devices", type=count(1), default=1, help="processes per node (>1: DDP)")
    parser.add_argument("--num-nodes", type=count(1), default=1, help="machines, each running --devices processes")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "32", "bf16-mixed", "16-mixed"],
                        help="Lightning's precision setting")
    parser.add_argument("--workers", dest="num_workers", type=count(0), default=0, help=WORKERS_HELP)
    parser.add_argument("--logger", default="csv", choices=LOGGERS,
                        help="where every run logs its losses, learning rate and validation metrics: csv "
                             "(RUN/logs/), tensorboard, wandb or mlflow (the last three need their package)")


def engine_of(args) -> dict:
    from oracle_kd.train_command import engine
    from oracle_kd.config import TrainConfig

    cfg = engine(TrainConfig(), args)
    return {k: getattr(cfg, k) for k in ("accelerator", "devices", "num_nodes", "precision", "num_workers", "logger")}


TASK_HELP = f"the task: {', '.join(TASK_NAMES)}"
MODEL_HELP = "a student checkpoint, or a student exported to ONNX (.onnx)"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="oracle-kd", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(title="commands", parser_class=Parser)

    e = sub.add_parser("experiment", help="the main job: data, both teachers, all student arms, diagnostics, report")
    e.add_argument("--task", required=True, choices=TASK_NAMES, help=TASK_HELP)
    e.add_argument("--preset", default="quick", help=PRESET_HELP)
    e.add_argument("--seeds", type=count(1), default=None, help="number of seeds (default: the preset's)")
    e.add_argument("--out", default=None, help="output folder (default: runs/<task>-<preset>)")
    add_cache(e)
    add_threads(e)
    add_overrides(e, "; a run folder holding another setting is refused by name, the others are reused")
    add_engine(e)
    e.set_defaults(run=cmd_experiment)

    d = sub.add_parser("data", help="generate the default data set of a task")
    d.add_argument("task", choices=TASK_NAMES, help=TASK_HELP)
    d.add_argument("--cache", "--out", dest="cache", default=None, metavar="DIR",
                   help="cache folder of generated data (default: $ORACLE_KD_CACHE or ~/.cache/oracle-kd; "
                        "--out is its old name)")
    d.add_argument("--preset", default="quick", help=PRESET_HELP)
    add_threads(d)
    d.set_defaults(run=cmd_data)

    t = sub.add_parser("train", help="one training run; prints its result as JSON")
    t.add_argument("task", choices=TASK_NAMES, help=TASK_HELP)
    t.add_argument("--model", required=True, choices=["student", "conventional", "oracle"], help="what to train")
    t.add_argument("--preset", default="quick", help=PRESET_HELP)
    t.add_argument("--train-data", default=None, help="user training data (default: the preset's generated data)")
    t.add_argument("--val-data", default=None, help="user validation data (required with --train-data)")
    t.add_argument("--teacher", action="append", default=[], metavar="CKPT",
                   help="teacher checkpoint to distil from (repeatable: several teachers, one --kd each); "
                        "the KD options below need it")
    # None below: given or not is told apart, so that a KD option without --teacher is an error
    t.add_argument("--kd", action="append", default=None, choices=KD_METHODS,
                   help=f"KD method (default {KDTerm.method}; repeatable, one per --teacher)")
    t.add_argument("--tau", type=number(above=0), default=None, help=f"KD temperature (default {KDTerm.tau:g})")
    t.add_argument("--kd-weight", type=number(low=0), default=None,
                   help=f"weight of each KD term (default {KDTerm.weight:g})")
    t.add_argument("--top-k", type=count(1), default=None,
                   help="store only the k best labels per teacher frame (large vocabularies; default: all)")
    t.add_argument("--teacher-store", default=None, help="folder of stored teacher outputs (default OUT/teacher_outputs)")
    t.add_argument("--seed", type=SEED, default=0, help="random seed of weights, batches and augmentation")
    t.add_argument("--data-root", default=None, metavar="DIR",
                   help="--train-data, --val-data and every file they name must lie inside DIR")
    t.add_argument("--out", required=True, help="the run's folder (checkpoint, history, logs, skipped.tsv)")
    add_cache(t)
    add_threads(t)
    add_overrides(t)
    add_engine(t)
    t.set_defaults(run=cmd_train)

    v = sub.add_parser("evaluate", help="metrics of a checkpoint on a data path; prints JSON")
    v.add_argument("checkpoint", help="any checkpoint that training wrote (an Oracle Teacher reads the labels)")
    v.add_argument("--data", required=True, help="scene text: a labels.tsv folder or an LMDB; speech: a JSON-lines manifest or a LibriSpeech-layout folder; translation: a source<TAB>target .tsv or a folder with aligned source.txt and target.txt")
    v.add_argument("--json-out", default=None, help="also write the metrics to this file")
    v.add_argument("--batch-size", type=count(1), default=128, help="examples per batch")
    v.add_argument("--data-root", default=None, metavar="DIR", help="--data and every file it names must lie inside DIR")
    add_threads(v)
    v.add_argument("--workers", dest="num_workers", type=count(0), default=0, help=WORKERS_HELP)
    v.set_defaults(run=cmd_evaluate)

    r = sub.add_parser("recognize", help="read text images; prints path<TAB>text")
    r.add_argument("checkpoint", help=MODEL_HELP)
    r.add_argument("images", nargs="+", help="image files (anything Pillow reads)")
    r.add_argument("--skipped", default="skipped.tsv", help="where unreadable inputs are listed")
    add_threads(r)
    r.set_defaults(run=cmd_recognize)

    a = sub.add_parser("transcribe", help="transcribe audio files; prints path<TAB>text and the real-time factor")
    a.add_argument("checkpoint", help=MODEL_HELP)
    a.add_argument("audio", nargs="+", help="audio files of any length (WAV, FLAC, anything libsndfile reads)")
    a.add_argument("--beam", type=count(0), default=0, help="beam width (0: greedy decoding)")
    a.add_argument("--lm", default=None, help="KenLM n-gram model (ARPA or binary) for beam search")
    a.add_argument("--alpha", type=number(), default=0.5, help="LM weight")
    a.add_argument("--beta", type=number(), default=1.0, help="word insertion bonus")
    a.add_argument("--skipped", default="skipped.tsv", help="where unreadable inputs are listed")
    a.add_argument("--chunk-seconds", type=number(above=0), default=30.0,
                   help="a long file is read and run in overlapping windows of about this much audio plus the "
                        "model's context on each side; memory does not grow with the file")
    a.add_argument("--batch-seconds", type=number(above=0), default=120.0,
                   help="audio per batch, padding included: windows and short files are batched by their total "
                        "length")
    add_threads(a)
    a.set_defaults(run=cmd_transcribe)

    tr = sub.add_parser("translate", help="translate English lines of standard input; prints line<TAB>German")
    tr.add_argument("checkpoint", help="a translation student checkpoint, or one exported to ONNX (.onnx), or an "
                                       "autoregressive teacher's checkpoint (beam search of its configured width)")
    tr.add_argument("--skipped", default="skipped.tsv", help="where unusable lines (empty ones) are listed")
    add_threads(tr)
    tr.set_defaults(run=cmd_translate)

    x = sub.add_parser("export", help="export a student for deployment; prints the file written")
    x.add_argument("checkpoint", help="a student checkpoint (an Oracle Teacher needs the labels and is refused)")
    x.add_argument("--format", default="onnx", choices=["onnx"], help="the file format")
    x.add_argument("--out", required=True, help="the file to write")
    add_threads(x)
    x.set_defaults(run=cmd_export)

    from oracle_kd import report

    rp = sub.add_parser("report", help="the README tables of finished experiments (results.json), or report.md again")
    report.add_arguments(rp)
    rp.set_defaults(run=report.run)

    b = sub.add_parser("bench", help="performance benchmarks: bench.json and BENCHMARKS.md beside it")
    b.add_argument("--task", action="append", choices=TASK_NAMES, help="a task to measure (repeatable; default: all)")
    b.add_argument("--preset", default="quick", help=PRESET_HELP)
    b.add_argument("--repeats", type=count(1), default=None, help="timed rounds (default: 7; 3 with --quick)")
    b.add_argument("--quick", action="store_true", help="few rounds and steps: checks that it runs, for tests and CI")
    b.add_argument("--no-ddp", action="store_true", help="leave out the DDP scaling runs (subprocesses)")
    b.add_argument("--out", default="bench.json", help="the JSON file to write (BENCHMARKS.md goes beside it)")
    add_threads(b)
    add_cache(b)
    b.set_defaults(run=cmd_bench)
    return p


def cmd_experiment(args) -> int:
    from oracle_kd.experiment import run_experiment
    from oracle_kd.report import summary_table

    out = args.out or f"runs/{args.task}-{args.preset}"
    check_writable_folder(out, f"--out {out}")
    results = run_experiment(args.task, args.preset, args.seeds, out,
                             cache=Path(args.cache) if args.cache else None, progress=not args.no_progress,
                             threads=args.threads, overrides=args.overrides, engine=engine_of(args))
    print(summary_table(results), file=args.stdout)
    return 0


def cmd_data(args) -> int:
    from oracle_kd.config import load_preset
    from oracle_kd.experiment import default_cache
    from oracle_kd.tasks import get_task

    folder = get_task(args.task).prepare_data(load_preset(args.task, args.preset)["data"],
                                              Path(args.cache) if args.cache else default_cache(),
                                              progress=not args.no_progress)
    print(folder, file=args.stdout)
    return 0


def cmd_train(args) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from oracle_kd.train_command import train_one

    result = train_one(args)
    if rank_zero_only.rank == 0:  # under DDP every process returns here; one prints
        print(json.dumps(result, indent=2), file=args.stdout)
    return 0


def cmd_evaluate(args) -> int:
    from oracle_kd import diagnostics
    from oracle_kd.checkpoint import load_model
    from oracle_kd.io import atomic_write_json
    from oracle_kd.skips import SkipLog, require_usable

    beside = Path(args.json_out).parent if args.json_out else Path(".")
    check_writable_folder(beside, f"--json-out {args.json_out}" if args.json_out else "the current folder (skipped.tsv)")
    task, model, meta = load_model(args.checkpoint)
    skips = SkipLog()
    try:  # the checkpoint's own config sets the frame count examples are checked against
        dataset = task.dataset(Path(args.data), None, skips, model_cfg=meta.get("config", {}),
                               data_root=Path(args.data_root) if args.data_root else None)
        metrics, decoded = diagnostics.evaluate(task, model, dataset, args.batch_size, progress=not args.no_progress,
                                                num_workers=args.num_workers, details=False)
        skips.add_new(decoded.skipped)  # examples whose source could not be decoded when read
        require_usable(decoded.references, len(dataset), args.data, len(skips))
    finally:  # a data set rejected whole still lists every skip (the terminal shows the first 20)
        skips.write(beside / "skipped.tsv")
    metrics["skipped"] = len(skips)
    if args.json_out:
        atomic_write_json(args.json_out, metrics)
    print(json.dumps(metrics), file=args.stdout)
    return 0


def cmd_recognize(args) -> int:
    return run_inference(args, "recognize", args.images)


def cmd_transcribe(args) -> int:
    return run_inference(args, "transcribe", args.audio)


def cmd_translate(args) -> int:
    return run_inference(args, "translate", sys.stdin.read().splitlines())


def run_inference(args, command: str, inputs: list[str]) -> int:
    """`command` (recognize, transcribe, translate) on `inputs`: source<TAB>text per readable
    input on stdout; the real-time factor on stderr when the task can tell an input's duration."""
    import time

    from oracle_kd.decoding import BeamSearch
    from oracle_kd.inference import load_for_inference, model_config, recognize
    from oracle_kd.skips import SkipLog

    check_writable_folder(Path(args.skipped).parent, f"--skipped {args.skipped}")
    task, model, meta = load_for_inference(args.checkpoint)
    if task.inference_command != command:
        raise InputError(f"{args.checkpoint} is a {task.name} model: use `oracle-kd {task.inference_command}`, "
                         f"not {command}")
    decoder = None
    if getattr(args, "beam", 0) or getattr(args, "lm", None):
        decoder = BeamSearch(task.tokenizer.labels, beam_width=args.beam or 32, lm_path=args.lm, alpha=args.alpha,
                             beta=args.beta)
    options = {}
    if hasattr(task, "stream_inputs"):  # long recordings: windows of --chunk-seconds, batched by --batch-seconds
        options = {"batch_size": args.batch_seconds,
                   "stream": {"model_cfg": model_config(meta), "chunk_seconds": args.chunk_seconds}}
    skips = SkipLog()
    start, seconds = time.perf_counter(), 0.0
    for source, text, duration in recognize(task, model, inputs, skips, decoder=decoder,
                                            progress=not args.no_progress, **options):
        seconds += duration
        print(f"{source}\t{text}", file=args.stdout, flush=True)
    elapsed = time.perf_counter() - start
    if seconds:
        print(f"real-time factor {elapsed / seconds:.4f} ({seconds:.1f} s of input in {elapsed:.2f} s)",
              file=sys.stderr)
    skips.write(args.skipped)
    return 1 if len(skips) and len(skips) == len(inputs) else 0


def cmd_export(args) -> int:
    from oracle_kd.export import export_onnx

    check_writable_folder(Path(args.out).parent, f"--out {args.out}")
    print(export_onnx(args.checkpoint, args.out), file=args.stdout)
    return 0


def cmd_bench(args) -> int:
    from oracle_kd.bench import run_bench
    from oracle_kd.bench.markdown import summary_lines
    from oracle_kd.experiment import default_cache

    check_writable_folder(Path(args.out).parent, f"--out {args.out}")
    result = run_bench(args.task or TASK_NAMES, args.preset, args.out,
                       Path(args.cache) if args.cache else default_cache(), threads=args.threads, quick=args.quick,
                       progress=not args.no_progress, repeats=args.repeats, ddp_scaling=not args.no_ddp)
    print("\n".join(summary_lines(result)), file=args.stdout)
    return 0
