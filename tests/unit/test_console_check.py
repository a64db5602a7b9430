"""The console check the Ray tests apply to the quickstart's verbs: it catches each kind of
line a quickstart printed before the console was made quiet, and passes ours."""

from tests.console import library_noise

# Lines of a real `dwsfusion pipeline run --config configs/quickstart.yaml` (Ray 2.60), shortened.
BEFORE = [
    "2026-12-06 07:29:27,897\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled",
    "2026-12-06 07:29:33,923\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set `...`.",
    "\x1b[36m(pid=gcs_server)\x1b[0m [2026-12-06 07:29:42,702 E 15206 15206] (gcs_server) "
    "gcs_actor_scheduler.cc:538: Failed to kill actor 0c4a",
    "(TrainController pid=16612) [2026-12-06 07:29:53,715 E 16612 16676] core_worker.cc:2465: Actor with",
    "(DatasetManager pid=16996) /x/execution_options.py:436: RayDeprecationWarning: `exclude_resources` is",
    "(SplitCoordinator pid=17226) Progress bars disabled. To enable, set `...`.",
    "fuse:   0%|          | 0/6 [00:00<?, ?pair/s][2026-12-06 07:43:40,580 E 15167 15167] core_worker.cc:2465: A",
    "/x/pipelines/plots.py:88: UserWarning: No artists with labels found to put in legend.",
]

OURS = [
    "[samples] running -> /tmp/qs/runs/workflows/quickstart/steps/samples-1",
    "\x1b[36m(RayTrainWorker pid=16795)\x1b[0m [quickstart.train-e9 epoch 0] g 2.4862  val 2.0741  Qabf 0.621",
    "evaluate:  17%|█▋        | 1/6 [00:04<00:21,  4.39s/pair]\revaluate: 100%|██████████| 6/6 [00:15<00:00]",
    "Successfully registered model 'dwsfusion-quickstart'.",
    "fused images:  /tmp/qs/runs/workflows/quickstart/steps/fuse-1/fused  (metrics.csv, manifest.json beside them)",
]


def test_every_kind_of_library_line_is_caught():
    assert len(library_noise("\n".join(BEFORE))) == len(BEFORE)


def test_our_lines_and_progress_bars_pass():
    assert library_noise("\n".join(OURS)) == []
