"""The ``iic`` command: each task's commands (clustering: train, evaluate, predict; vectors: ``iic train --dataset
vectors …``; fine-tuning: finetune; ``iic segment …``), with one clear line for bad input."""

import argparse
import sys
import warnings

from iic.errors import ESCAPE, IICError


def quiet_libraries() -> None:
    """Keep deprecation chatter out of the user's terminal; our summary says what matters.

    Lightning's banners are quieted where it is used (``engine.trainer.lightning_quieted``), not here: importing it
    takes seconds, and a bad setting or a missing file is found without it."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def build_parser() -> argparse.ArgumentParser:
    from iic.clustering.cli import add_clustering_commands
    from iic.export.cli import add_export_parser
    from iic.finetuning.cli import add_finetune_parser
    from iic.segmentation.cli import add_segment_parser

    parser = argparse.ArgumentParser(prog="iic", description="Invariant Information Clustering: cluster and segment "
                                                             "images, and cluster vectors, without labels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_clustering_commands(sub)
    add_finetune_parser(sub)
    add_segment_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed escaped, never a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=ESCAPE)
    if serves_onnx(argv):  # ONNX Runtime, numpy and Pillow only: before anything imports torch
        return guarded(lambda: predict_command(argv[1:]))
    import iic.clustering.task  # noqa: F401  (each task declared: messages about a run name its task's commands)
    import iic.finetuning.task  # noqa: F401
    import iic.segmentation.task  # noqa: F401
    import iic.sequences.task  # noqa: F401
    import iic.vectors.task  # noqa: F401
    from iic.sequences.cli import parser_for as sequence_parser
    from iic.vectors.cli import build_train_parser, wants_vectors

    argv = argv or ["train"]
    if (parser := sequence_parser(argv)) is not None:  # sequences: their own train settings, evaluate and predict
        args = parser.parse_args(argv[1:])
    elif argv[0] == "train" and wants_vectors(argv[1:]):  # `iic train` of vectors has its own settings
        parser = build_train_parser()
        args = parser.parse_args(argv[1:])
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
    quiet_libraries()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return guarded(lambda: args.func(args))


def serves_onnx(argv: list[str]) -> bool:
    """``iic predict MODEL.onnx …``: the exported model's light path."""
    if argv[:1] != ["predict"]:
        return False
    valued = {"--out", "--threads", "--head", "--scale"}  # options that take a value, in either predict
    words = iter(argv[1:])
    for word in words:
        if word in valued:
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word.lower().endswith(".onnx")  # the model argument
    return False


def predict_command(argv: list[str]) -> int:
    from iic.export.serving import predict_command

    return predict_command(argv)


def guarded(command) -> int:
    """Run a command: bad input is one line on stderr and exit status 2, never a traceback."""
    try:
        return command() or 0
    except IICError as exc:
        print(f"iic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iic: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug, keep its traceback
            raise
        print(f"iic: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
