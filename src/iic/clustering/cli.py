"""``iic train | evaluate | predict``: image clustering from the command line (a thin layer over iic.clustering.api)."""

import argparse
import math
from pathlib import Path
from typing import Any


def percent(value: float) -> str:
    return f"{100 * value:5.1f}%"


def format_results(results: dict[str, Any]) -> str:
    lines = []
    for head in ("B", "A"):
        if head not in results:
            continue
        r = results[head]
        s = r["reported_subhead"]
        where = f"sub-head {s}" + (f" of trunk {r['reported_trunk']}" if "reported_trunk" in r else "")
        name = f"head {head} (k={r['k']}{', many-to-one' if r.get('mapping') == 'many-to-one' else ''})"
        if not any(math.isfinite(v) for v in r["subhead_losses"]):
            lines.append(f"{name}: not trained (training stopped before its first pass)")
        elif "reported" in r:
            rep, best = r["reported"], r["best_by_labels"]
            lines.append(f"{name}, {where} (lowest loss): ACC {percent(rep['acc'])}  NMI {rep['nmi']:.3f}  "
                         f"ARI {rep['ari']:.3f}")
            lines.append(f"{' ' * len(name)}  best sub-head by labels ({r['best_by_labels_subhead']}, not label-free): "
                         f"ACC {percent(best['acc'])}  NMI {best['nmi']:.3f}  ARI {best['ari']:.3f}")
        else:
            lines.append(f"{name}, {where} (lowest loss): training loss {r['subhead_losses'][s]:.4f}  "
                         f"cluster sizes {r['cluster_sizes']}")
    return "\n".join(lines)


# --- iic train ----------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from iic.clustering.config import CLUSTER_PRESETS, PAPER_ACCURACY, ClusterConfig
    from iic.clustering.task import CLUSTERING
    from iic.config import overrides_from_args
    from iic.engine.task import run_settings

    config = run_settings(CLUSTERING, args.preset, args.config, args.resume, overrides_from_args(args, ClusterConfig))

    from iic.clustering.api import run_training

    def announce(data, run_dir: Path) -> None:
        print(f"iic train: preset {config.preset}, dataset {config.dataset} ({len(data.train_b)} images for head B, "
              f"{len(data.evaluation)} evaluated, protocol {config.protocol}), run directory {run_dir}", flush=True)

    run = run_training(config, args.resume, progress=not args.no_progress, on_start=announce)
    if not run.is_main_process:
        return 0
    print(f"\ntrained in {run.seconds:.0f} s")
    print(format_results(run.results))
    if config.preset in PAPER_ACCURACY and CLUSTER_PRESETS[config.preset].get("dataset") == config.dataset:
        print(f"(paper, {config.preset}: {PAPER_ACCURACY[config.preset]}%)")
    print(f"run directory: {run.run_dir} "
          f"(config.yaml, metrics.csv, results.yaml, checkpoints/, clusters.png, curves.png)")
    return 0


# --- iic evaluate ---------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from iic.data.images import check_writable
    from iic.engine.run import write_yaml
    from iic.finetuning.api import ClassifierModel
    from iic.loading import load
    from iic.vectors.api import VectorModel
    from iic.vectors.cli import evaluate_vectors

    model = load(args.run)
    if args.out is not None:
        check_writable(args.out)
    # This machine's accelerator, not the one the model was trained on.
    accelerator = "cpu" if args.cpu else "auto"
    if isinstance(model, ClassifierModel):
        results = evaluate_classifier(model, args, accelerator)
    elif isinstance(model, VectorModel):
        results = evaluate_vectors(model, args, accelerator)
    else:
        results = model.evaluate(args.dataset, args.data_path, args.protocol, args.download or None,
                                 accelerator=accelerator, map_labels=args.map_labels, map_seed=args.map_seed,
                                 map_from=args.map_from)
        dataset, protocol = args.dataset or model.config.dataset, args.protocol or model.config.protocol
        images = sum(results["B"]["cluster_sizes"])
        print(f"iic evaluate: {model.path} on {dataset} ({images} images, protocol {protocol})")
        print(format_results(results))
        for head in ("B", "A"):
            if "label_efficient" in results.get(head, {}):
                r = results[head]["label_efficient"]
                where = "of the training split" if r["fitted_on"] == "training split" else "evaluated"
                print(f"head {head}: clusters named from {r['labels']} labelled images {where} (seed {r['seed']}): "
                      f"ACC {percent(r['acc'])} on {'the other ' if where == 'evaluated' else ''}{r['scored_on']}")
    if args.out is not None:
        write_yaml(Path(args.out), results)
        print(f"results written to {args.out}")
    return 0


def evaluate_classifier(model, args: argparse.Namespace, accelerator: str) -> dict[str, Any]:
    """A fine-tuned run's scores: its classes are named already, and it is scored on its data's test split."""
    from iic.errors import IICError
    from iic.finetuning.cli import format_scores

    if args.map_labels is not None:
        raise IICError("--map-labels names the clusters of an IIC run; a fine-tuned run's classes are named already")
    if args.protocol is not None:
        raise IICError("--protocol is for IIC runs; a fine-tuned run is scored on its data's test split (else on "
                       "its training images not labelled)")
    results = model.evaluate(args.dataset, args.data_path, args.download or None, accelerator=accelerator)
    dataset = args.dataset or model.config.dataset or model.module.source.dataset
    print(f"iic evaluate: {model.path} (fine-tuned) on {dataset}")
    print(format_scores(results))
    return results


# --- iic predict ----------------------------------------------------------------------------------------

def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from iic.clustering.outputs import write_predictions
    from iic.data.images import check_writable, expand_image_paths
    from iic.errors import IICError
    from iic.finetuning.api import ClassifierModel
    from iic.loading import load
    from iic.vectors.api import VectorModel
    from iic.vectors.cli import predict_vectors

    model = load(args.checkpoint)
    check_writable(args.out)
    if isinstance(model, VectorModel):
        return predict_vectors(model, args)
    files = expand_image_paths(args.images, recursive=True)  # a folder with class sub-folders works too
    if isinstance(model, ClassifierModel):
        if args.head != "B":
            raise IICError("--head is for IIC runs: a fine-tuned run has one classifier")
        probs = model.predict_proba(files)
        write_predictions(args.out, files, probs, model.class_names)
        counts = dict(zip(model.class_names, torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).tolist()))
        print(f"iic predict: {len(files)} image{'' if len(files) == 1 else 's'} → {args.out} (classes {counts})")
        return 0
    probs = model.predict_proba(files, head=args.head)
    write_predictions(args.out, files, probs)
    counts = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).tolist()
    print(f"iic predict: {len(files)} image{'' if len(files) == 1 else 's'} → {args.out} (cluster sizes {counts})")
    return 0


# --- parser ---------------------------------------------------------------------------------------------

def add_clustering_commands(sub: argparse._SubParsersAction) -> None:
    from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
    from iic.config import add_config_arguments, add_run_arguments

    # No abbreviated flags: `iic train` chooses its task by the --dataset and --preset it is given (vectors/cli.py).
    train = sub.add_parser("train", help="train an IIC clustering model (no arguments: the embedded digits)",
                           allow_abbrev=False,
                           epilog="Vectors, tables and frozen image features: iic train --dataset vectors|features|"
                                  "wine|breast-cancer, or --preset digits-vectors, mnist-vectors, cifar10-features "
                                  "(add --help then for their settings).")
    add_run_arguments(train, f"paper settings: {', '.join(CLUSTER_PRESETS)} (default: the --config file's preset, "
                             f"else digits)",
                      "continue a run (its directory, or its checkpoints/last.ckpt) from its last checkpoint")
    add_config_arguments(train, ClusterConfig)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a run or checkpoint: ACC/NMI/ARI per sub-head (a fine-tuned run: "
                                         "its accuracy)")
    ev.add_argument("run", metavar="RUN_OR_CKPT", help="run directory (its last checkpoint) or checkpoint file")
    ev.add_argument("--dataset", help="evaluate on another dataset than the run's")
    ev.add_argument("--data-path", help="data path for --dataset")
    ev.add_argument("--protocol", choices=["iic", "split"],
                    help="iic: train+test splits together, as the paper; split: the test split (default: the run's)")
    ev.add_argument("--download", action="store_true",
                    help="download a torchvision dataset not found under --data-path")
    ev.add_argument("--cpu", action="store_true", help="evaluate on the CPU")
    ev.add_argument("--out", help="also write the results as YAML here")
    ev.add_argument("--map-labels", type=float, metavar="N",
                    help="also name each head's clusters from N labelled images only (a count, or a fraction below "
                         "1; stratified by class) and score that on the other images")
    ev.add_argument("--map-seed", type=int, default=0, help="seed of the --map-labels draw (default 0)")
    ev.add_argument("--map-from", choices=["evaluated", "train"], default="evaluated",
                    help="--map-labels draws from the evaluated images and scores the others (default), or draws from "
                         "the training split and scores the whole test split (with --protocol split)")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="cluster new images or vectors with a trained model (a fine-tuned one: "
                                        "classify them), or with an exported .onnx file (no torch needed)")
    pr.add_argument("checkpoint", metavar="CKPT", help="checkpoint file or run directory (or a .onnx file from "
                                                       "iic export: see docs/export.md)")
    pr.add_argument("images", nargs="+", metavar="INPUTS",
                    help="image files and/or folders (with their sub-folders); for a vector run, .npy/.npz/.csv files")
    pr.add_argument("--out", default="clusters.csv",
                    help="CSV of path, cluster (a fine-tuned run: class), probability (default: clusters.csv)")
    pr.add_argument("--head", default="B", choices=["A", "B"],
                    help="B: k_b clusters (default); A: the over-clustering head's k_a clusters")
    pr.set_defaults(func=cmd_predict)
