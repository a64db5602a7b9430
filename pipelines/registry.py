"""Register generators in the MLflow model registry behind a promotion gate.

``register_model`` takes a training run (its logged generator) or any checkpoint file (ours or
the authors' release), evaluates it on a fixed evaluation set, registers a new version tagged
with those metrics, and moves an alias:

- ``champion`` (default) goes through the gate: the new version becomes champion only if, on
  every gate metric, it is not worse than the current champion evaluated on the same set
  in the same call (lower is better for MSE and Nabf, higher for the rest; ``tolerance`` is a
  relative slack). Otherwise it becomes ``challenger`` and the reason is returned.
- any other alias (``challenger``, ``staging``, ...) is set directly.

The evaluation set is a folder with ``ir/`` + ``vi/`` (e.g. TNO) or, by default, the
project's seeded synthetic pairs, so a fresh clone has a reproducible gate.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dwsfusion.checkpoints import checkpoint_file, load_generator
from dwsfusion.errors import UsageError
from dwsfusion.evaluate import evaluate_generator
from dwsfusion.model import Generator
from dwsfusion.onnx_engine import ATTACHED_ONNX
from dwsfusion.pairs import ImagePair, find_pairs, resolve_source
from dwsfusion.samples import write_samples

from .config import RegisterSettings
from .mlflow_model import log_generator
from .runtime import set_experiment, use_tracking

LOWER_IS_BETTER = frozenset({"MSE", "Nabf"})
REGISTRY_EXPERIMENT = "dwsfusion-registry"
SAMPLE_EVAL_SET = {"count": 6, "seed": 0}


@dataclass
class Registration:
    name: str
    version: str
    alias: str  # the alias the new version got
    promoted: bool
    reason: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str = ""


def load_registered_generator(model_uri: str) -> Generator:
    """A generator from any MLflow URI of our pyfunc (``models:/name@alias``, ``runs:/...``)."""
    with warnings.catch_warnings():  # MLflow nags about type hints; the model has a signature
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().generator.eval()


def _logged_model_id(model_uri: str) -> str:
    """The MLflow logged model behind ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or
    ``models:/m-...``: the one whose artifacts every version registered from it shares."""
    client = MlflowClient()
    path = model_uri.removeprefix("models:/")
    if not model_uri.startswith("models:/"):
        raise UsageError(f"{model_uri}: give a registered model, models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        if "@" in path:
            version = client.get_model_version_by_alias(*path.split("@", 1))
        elif "/" in path:
            version = client.get_model_version(*path.split("/", 1))
        else:
            return path  # already a logged model id
    except MlflowException as exc:
        raise UsageError(f"{model_uri}: no such registered model or version ({exc.message})") from None
    # MLflow 3 records the logged model in the version's source (models:/m-...); model_id may be unset
    model_id = version.model_id or (version.source.removeprefix("models:/") if version.source else "")
    if not model_id.startswith("m-"):
        raise UsageError(f"{model_uri}: its source {version.source} is not a logged model (MLflow 3)")
    return model_id


def attach_onnx(model_uri: str, onnx_path: str | Path) -> str:
    """Log an exported ONNX file with a registered model (into its pyfunc's artifacts, beside
    the weights), so that the model can be fused and served on ONNX Runtime. Returns its URI."""
    model_id = _logged_model_id(model_uri)
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as folder:
        named = Path(folder) / ATTACHED_ONNX
        named.write_bytes(Path(onnx_path).read_bytes())
        client.log_model_artifact(model_id, str(named), "artifacts")
    return f"{mlflow.get_logged_model(model_id).artifact_location}/artifacts/{ATTACHED_ONNX}"


def registered_onnx(model_uri: str) -> Path:
    """The ONNX file attached to a registered model (``attach_onnx``), downloaded; a clear
    error when there is none."""
    model_id = _logged_model_id(model_uri)
    listed = {a.path for a in MlflowClient().list_logged_model_artifacts(model_id, "artifacts")}
    if f"artifacts/{ATTACHED_ONNX}" not in listed:
        raise UsageError(
            f"{model_uri} has no ONNX file: write and attach one with "
            f"dwsfusion export --model {model_uri} --output generator.onnx"
        )
    location = mlflow.get_logged_model(model_id).artifact_location
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/{ATTACHED_ONNX}"))


def _eval_pairs(settings: RegisterSettings, workdir: Path) -> tuple[list[ImagePair], str]:
    """The evaluation pairs and an identity for them (name + content hash)."""
    if settings.eval_source:
        ir_dir, vi_dir = resolve_source(settings.eval_source)
        label = str(Path(settings.eval_source).resolve())
    else:
        root = write_samples(workdir / "eval", **SAMPLE_EVAL_SET)
        ir_dir, vi_dir = root / "ir", root / "vi"
        label = f"samples(count={SAMPLE_EVAL_SET['count']}, seed={SAMPLE_EVAL_SET['seed']})"
    pairs, _ = find_pairs(ir_dir, vi_dir, strict=True)
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(pair.ir.read_bytes())
        digest.update(pair.vi.read_bytes())
    return pairs, f"{label} sha256:{digest.hexdigest()[:16]}"


def _mean_metrics(generator: Generator, pairs: list[ImagePair], names: tuple[str, ...]) -> dict[str, float]:
    evaluation = evaluate_generator(generator, pairs, names, progress=False)
    if evaluation.failed:
        raise UsageError("evaluation set has unreadable pairs: " + "; ".join(evaluation.failed))
    return {name: mean for name, (mean, _) in evaluation.summary().items()}


def gate_decision(new: dict[str, float], champion: dict[str, float], gate: RegisterSettings) -> tuple[bool, str]:
    """(passes, reason): not worse than the champion on every gate metric, within tolerance."""
    worse = []
    for name in gate.gate_metrics:
        slack = gate.tolerance * abs(champion[name])
        if name in LOWER_IS_BETTER:
            failed = new[name] > champion[name] + slack
        else:
            failed = new[name] < champion[name] - slack
        if failed:
            worse.append(f"{name} {new[name]:.4f} vs champion {champion[name]:.4f}")
    if worse:
        return False, "worse than the champion on " + ", ".join(worse)
    return True, "not worse than the champion on " + ", ".join(gate.gate_metrics)


def _model_from_run(run_id: str) -> str:
    try:
        experiment = MlflowClient().get_run(run_id).info.experiment_id
    except MlflowException:
        raise UsageError(f"no MLflow run {run_id} in {mlflow.get_tracking_uri()}") from None
    # searched within the run's experiment: by default MLflow looks in the active one only
    models = mlflow.search_logged_models(
        experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    if not models:
        raise UsageError(f"MLflow run {run_id} has no logged generator (did its training finish?)")
    return models[0].model_uri


def _model_from_checkpoint(checkpoint: Path, artifact_location: str | None = None) -> str:
    """Log a checkpoint file as our pyfunc in a registration run; returns its model URI."""
    checkpoint = checkpoint_file(checkpoint)  # a training checkpoint's folder -> its state.pt
    load_generator(checkpoint)  # refuse a bad file before anything is logged
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    set_experiment(mlflow.get_tracking_uri(), REGISTRY_EXPERIMENT, artifact_location)
    with mlflow.start_run(run_name=f"register {checkpoint.name}"):
        mlflow.log_params({"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": digest})
        return log_generator(str(checkpoint))


def current_version(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_model(
    *,
    run_id: str | None = None,
    checkpoint: str | Path | None = None,
    settings: RegisterSettings = RegisterSettings(),
    tracking_uri: str | None = None,
    artifact_location: str | None = None,
) -> Registration:
    """Register a run's generator or a checkpoint file as a new version of ``settings.name``
    (a checkpoint is first logged in the experiment ``dwsfusion-registry``, created with its
    artifacts under ``artifact_location``, by default beside a SQLite store)."""
    if (run_id is None) == (checkpoint is None):
        raise UsageError("give exactly one of a run id or a checkpoint file")
    if tracking_uri:
        use_tracking(tracking_uri)
    name, alias = settings.name, settings.alias
    client = MlflowClient()
    if run_id:
        model_uri = _model_from_run(run_id)
    else:
        model_uri = _model_from_checkpoint(Path(checkpoint), artifact_location)
    metric_names = tuple(dict.fromkeys((*settings.gate_metrics, "Qabf", "VIF", "SSIM", "MI", "EN", "SD")))

    with tempfile.TemporaryDirectory() as workdir:
        pairs, eval_id = _eval_pairs(settings, Path(workdir))
        metrics = _mean_metrics(load_registered_generator(model_uri), pairs, metric_names)
        champion = current_version(client, name, "champion") if alias == "champion" else None
        champion_metrics = {}
        if champion is not None:
            champion_metrics = _mean_metrics(
                load_registered_generator(f"models:/{name}/{champion.version}"), pairs, metric_names
            )

    tags = {f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()} | {"eval_set": eval_id}
    version = mlflow.register_model(model_uri, name, tags=tags)
    if alias != "champion":
        promoted, reason, given = False, f"alias '{alias}' set directly (no gate)", alias
    elif champion is None:
        promoted, reason, given = True, "first champion of this model name", "champion"
    else:
        promoted, reason = gate_decision(metrics, champion_metrics, settings)
        given = "champion" if promoted else "challenger"
        for key, value in champion_metrics.items():  # the champion's figures on this set, for the UI
            client.set_model_version_tag(name, champion.version, f"metric.{key}", f"{value:.6f}")
        client.set_model_version_tag(name, champion.version, "eval_set", eval_id)
    client.set_registered_model_alias(name, given, version.version)
    client.set_model_version_tag(name, version.version, "gate", reason)
    return Registration(name, version.version, given, promoted, reason, metrics, champion_metrics, model_uri)
