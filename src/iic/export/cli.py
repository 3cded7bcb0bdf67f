"""``iic export RUN_OR_CKPT --out model.onnx``: a trained model of any task as an ONNX file or a torch.export
program, checked against PyTorch before it is written."""

import argparse
import json

from iic.export import FORMATS


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="write a trained model as ONNX or a torch.export program",
                                   description="Export a trained model (clustering, fine-tuned, segmentation, vectors, "
                                               "sequences) with its preprocessing, checked against PyTorch.")
    parser.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="a run directory (its last checkpoint) or a .ckpt")
    parser.add_argument("--out", required=True, help="the file to write (model.onnx, model.pt2)")
    parser.add_argument("--format", choices=None, default=None,
                        help=f"{' or '.join(FORMATS)} (default: from --out's suffix)")
    parser.add_argument("--head", default="B", help="the head whose reported sub-head is exported (default B)")
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from iic.export import export

    meta = export(args.checkpoint, args.out, args.format, args.head)
    checked = meta["checked"]
    print(f"iic export: {meta['task']} model → {args.out} ({meta['format']}; input {meta['input_name']} "
          f"{meta['input']['layout']} {meta['input']['dtype']}, output {meta['output_name']}; checked on "
          f"{checked['batches']} batches against PyTorch: largest difference {checked['max_abs_difference']:.1g})")
    if meta.get("class_names"):
        print(f"iic export: classes {json.dumps(meta['class_names'])}")
    return 0
