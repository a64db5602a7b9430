"""``dwsfusion export``: a checkpoint or a registered model -> one ONNX file for any image size,
checked against PyTorch on real or generated pairs, and attached to the registered model.

    dwsfusion export --checkpoint C --output generator.onnx [--ir DIR --vi DIR]
    dwsfusion export --model models:/NAME@ALIAS --output generator.onnx [--ir DIR --vi DIR]

The file is written only when parity holds (at most ``tolerance`` grey levels on every pair,
8-bit as ``dwsfusion fuse`` writes); a registered model gets it beside its weights, so that
``dwsfusion fuse --model ... --engine onnxruntime`` and the pyfunc can run it without PyTorch.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dwsfusion.checkpoints import load_generator
from dwsfusion.errors import UsageError
from dwsfusion.export import Parity, check_parity, export_graph, sample_planes, save_onnx
from dwsfusion.fuse import load_pair
from dwsfusion.onnx_engine import ATTACHED_ONNX, OnnxFuser
from dwsfusion.pairs import find_pairs


@dataclass
class ExportResult:
    output: Path
    parity: Parity
    seconds: float  # the export itself
    attached: str | None = None  # the ONNX file's URI with the registered model


def parity_planes(ir_dir: Path | None, vi_dir: Path | None) -> tuple[list, str]:
    """The pairs parity is checked on: a folder's (their luma, as fuse reads them), else four
    generated scenes of odd and even sizes."""
    if ir_dir is None and vi_dir is None:
        return sample_planes(4), "generated scenes 97x131 to 640x480"
    if ir_dir is None or vi_dir is None:
        raise UsageError("give both --ir and --vi for the parity pairs (or neither: generated scenes)")
    pairs, _ = find_pairs(ir_dir, vi_dir, strict=True)
    sources = [load_pair(pair) for pair in pairs]
    return [(s.ir, s.vis_y) for s in sources], f"{len(pairs)} pairs of {ir_dir}"


def export_model(
    output: Path,
    checkpoint: str | None = None,
    model: str | None = None,
    ir_dir: Path | None = None,
    vi_dir: Path | None = None,
    tolerance: int = 1,
    progress: bool = True,
) -> ExportResult:
    """Export a checkpoint or a registered model to ``output`` once it is within ``tolerance``
    grey levels of PyTorch on the parity pairs; a registered model gets the file attached."""
    if (checkpoint is None) == (model is None):
        raise UsageError("give exactly one of --checkpoint PATH or --model URI")
    planes, sources = parity_planes(ir_dir, vi_dir)  # a bad folder is refused before the slow export
    if checkpoint is not None:
        generator, label, registry = load_generator(checkpoint), str(Path(checkpoint).resolve()), None
    else:
        from . import registry  # imports MLflow: only a registered model needs it

        generator, label = registry.load_registered_generator(model), model
    if progress:
        print(f"exporting {label} (torch.export, about a minute and a half on 2 CPU cores) ...", flush=True)
    started = time.perf_counter()
    graph = export_graph(generator, {"source": label})
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:  # ONNX Runtime runs the candidate from a file
        candidate = save_onnx(graph, Path(folder) / ATTACHED_ONNX)
        parity = check_parity(generator, OnnxFuser(candidate), planes, sources, progress)
    if not parity.passed(tolerance):
        raise UsageError(f"{parity.line()}: more than {tolerance}; nothing written")
    graph.metadata_props.add(key="parity", value=parity.line())
    written = save_onnx(graph, output)
    attached = registry.attach_onnx(model, written) if registry is not None else None
    return ExportResult(written, parity, seconds, attached)
