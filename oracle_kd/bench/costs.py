"""What whole runs would cost, from the measured per-example FLOPs and times.

An upper bound of the training alone: every run to its `max_epochs` (early stopping
ends some sooner); validation, test evaluation and diagnostics are left out. The GPU
column is an estimate, not a measurement: FLOPs over an assumed achieved speed.
"""

from __future__ import annotations

from oracle_kd.config import ExperimentConfig, from_dict, load_preset

# The GPU the estimate assumes: an NVIDIA A100's fp32 peak without tensor cores, and the share
# of it that small convolutional/recurrent models of this size typically reach (an assumption).
GPU = {"name": "NVIDIA A100 (fp32, no tensor cores)", "peak_tflops": 19.5, "assumed_fraction_of_peak": 0.3}
LARGEST_PRESET = {"scene-text": "full", "speech": "full", "translation": "full"}
# Public corpus sizes: LibriSpeech's 960 h of training audio (Panayotov et al., 2015) and
# MJSynth's 8.9 M word images (Jaderberg et al., 2014); per epoch, and for EPOCHS epochs.
CORPORA = {"speech": ("LibriSpeech 960 h", {"audio_seconds": 960 * 3600}),
           "scene-text": ("MJSynth", {"examples": 8_919_273})}
CORPUS_EPOCHS = 10


def cost_tables(result: dict, bench_preset: str) -> dict:
    return {"gpu_assumed": GPU, "corpus_epochs": CORPUS_EPOCHS,
            "note": f"per-example costs measured on preset {bench_preset}'s models and data; training only, "
                    "every run to max_epochs; 'here' = this machine at the bench's thread count",
            "presets": [row for task in result["data"] for row in preset_rows(result, task)],
            "corpora": [row for task in result["data"] if task in CORPORA for row in corpus_rows(result, task)]}


def preset_rows(result: dict, task: str) -> list[dict]:
    """One row per teacher and per student arm of the task's largest preset."""
    preset = LARGEST_PRESET[task]
    cfg = from_dict(ExperimentConfig, load_preset(task, preset))
    n_train = cfg.data.get("n_train") or result["data"][task]["corpus_train_examples"]
    if not n_train:
        return []
    rows = []
    for name, spec in cfg.teachers.items():
        row = unit_cost(result, task, f"train_step/{spec.model}", n_train * cfg.teacher_train(name).max_epochs)
        if row:
            rows.append({"task": task, "preset": preset, "run": f"teacher {name}", "runs": 1, **row})
    for arm, spec in cfg.arms.items():
        runs = len(cfg.arm_grid(arm)) + cfg.seeds - 1  # the grid on seed 0, then the other seeds
        case = "train_step/student_kd_frame" if spec.kd else "train_step/student_ctc"
        row = unit_cost(result, task, case, runs * n_train * cfg.train["student"].max_epochs)
        if row:
            rows.append({"task": task, "preset": preset, "run": f"arm {arm}", "runs": runs, **row})
    return rows


def corpus_rows(result: dict, task: str) -> list[dict]:
    corpus, size = CORPORA[task]
    rows = []
    for model in ("student", "conventional", "oracle"):
        step = "train_step/" + ("student_ctc" if model == "student" else model)
        case = result["cases"].get(f"{task}/{step}")
        if not case or not case.get("flops"):
            continue
        if "audio_seconds" in size:  # scale by audio length, which the models' cost follows
            examples = size["audio_seconds"] / case["audio_seconds"] * case["examples"]
        else:
            examples = size["examples"]
        row = unit_cost(result, task, step, examples * CORPUS_EPOCHS)
        rows.append({"task": task, "corpus": corpus, "model": model, "epochs": CORPUS_EPOCHS,
                     "examples_per_epoch": round(examples), **row})
    return rows


def unit_cost(result: dict, task: str, case_name: str, examples: float) -> dict | None:
    """Cost of training on `examples` examples with the step of case `case_name`."""
    case = result["cases"].get(f"{task}/{case_name}")
    if not case or not case.get("flops"):
        return None
    seconds_here = case["median_seconds"] / case["examples"] * examples
    flops = case["flops_per_example"] * examples
    gpu_seconds = flops / (GPU["peak_tflops"] * 1e12 * GPU["assumed_fraction_of_peak"])
    collate = result["cases"].get(f"{task}/features/collate")
    row = {"examples": round(examples), "pflop": flops / 1e15, "hours_here": seconds_here / 3600,
           "gpu_hours_estimate": gpu_seconds / 3600}
    if collate:
        # the CPU work of preparing the data (collate: features, augmentation), in core-seconds,
        # over the GPU's seconds for the same examples: cores a loader needs to keep the GPU busy
        core_seconds = collate["median_seconds"] * collate["threads"] / collate["examples"] * examples
        row["loader_cores_to_feed_gpu"] = core_seconds / gpu_seconds
    return row
