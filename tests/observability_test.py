"""TensorBoard output: process 0 only, gin config and hparams, evaluation curves, profiles."""

import glob
import os

import gin
import jax
import pytest
from tensorboard.backend.event_processing import event_file_loader

from gr_jax import errors, validation
from gr_jax.eval import tables
from gr_jax.train import example_task, metric_writers, partitioning, trainer


def _fit(workdir, **cfg):
  config = trainer.TrainerConfig(
    num_steps=4, log_every=2, checkpoint_every=100, progress_bar=False, **cfg
  )
  runner = trainer.Trainer(
    example_task.RegressionTask(), str(workdir), config=config, mesh=partitioning.make_mesh()
  )
  result = runner.fit(example_task.regression_batches(batch_size=16))
  runner.close()
  return result


def _events(logdir):
  """Every summary value in `logdir`'s event files: {tag: [value proto, ...]}."""
  out = {}
  for path in glob.glob(os.path.join(str(logdir), "events.out.tfevents.*")):
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        out.setdefault(value.tag, []).append(value)
  return out


def _scalars(events, tag):
  # The loader turns scalars into rank-0 tensors.
  return [v.tensor.float_val[0] for v in events[tag]]


@pytest.fixture
def gin_bound():
  gin.clear_config()
  gin.parse_config("make_schedule.warmup_steps = 1")
  yield
  gin.clear_config()


def test_process_zero_writes_gin_config_hparams_and_profile(tmp_path, gin_bound):
  _fit(tmp_path, profile_steps=(1, 3))
  events = _events(tmp_path / "tb")
  assert len(_scalars(events, "train/loss")) == 2  # logged at steps 2 and 4
  text = events["gin/operative_config/text_summary"][0]
  assert text.metadata.plugin_data.plugin_name == "text"
  assert b"make_schedule.warmup_steps = 1" in text.tensor.string_val[0]
  hparams = [
    v for vs in events.values() for v in vs if v.metadata.plugin_data.plugin_name == "hparams"
  ]
  content = b"".join(v.metadata.plugin_data.content for v in hparams)
  assert b"make_schedule.warmup_steps" in content
  assert b"TrainerConfig.profile_steps" in content
  traces = glob.glob(str(tmp_path / "tb" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_other_processes_write_nothing_and_draw_no_bars(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr("sys.stderr.isatty", lambda: True)
  assert not metric_writers.is_chief()
  assert not metric_writers.show_progress(True)
  writer = metric_writers.MetricWriter(str(tmp_path / "tb"))
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_text("note", "text")
  writer.write_hparams({"a": 1})
  writer.close()
  assert not os.path.exists(tmp_path / "tb")
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  assert metric_writers.show_progress(True)
  assert not metric_writers.show_progress(False)


def test_trainer_on_another_process_writes_no_events(tmp_path, monkeypatch, gin_bound):
  # Only the writer's view of the process changes: checkpoints (orbax) still see process 0.
  monkeypatch.setattr(metric_writers, "is_chief", lambda: False)
  result = _fit(tmp_path)
  assert result.last_metrics["loss"] > 0  # trained and measured
  assert os.path.isdir(tmp_path / "checkpoints")
  assert not os.path.exists(tmp_path / "tb")


def test_progress_bar_needs_a_terminal(monkeypatch):
  monkeypatch.setattr("sys.stderr.isatty", lambda: False)
  assert not metric_writers.show_progress(True)


def test_bad_profile_steps_is_a_named_binding_error():
  gin.clear_config()
  gin.parse_config("TrainerConfig.profile_steps = (5, 5)")
  try:
    with pytest.raises(errors.GinConfigError, match=r"TrainerConfig.profile_steps = \(5, 5\)"):
      validation.check_bindings()
  finally:
    gin.clear_config()


def test_evaluation_results_become_curves_over_beams(tmp_path):
  results = {
    "split": "valid",
    "baseline": "rqvae",
    "tokenizers": {
      "cq_sid": {"stages": {"semantic": {"1": {"hitrate": 0.1, "ci": {}}, "10": {"hitrate": 0.3}}}}
    },
    "comparisons": {"cq_sid": {"semantic": {"10": {"hitrate": {"value": 0.25, "low": 0.1}}}}},
  }
  tables.write_summaries(str(tmp_path), results)
  events = _events(tmp_path)
  assert _scalars(events, "valid/cq_sid/semantic/hitrate") == pytest.approx([0.1, 0.3])
  assert _scalars(events, "valid/cq_sid_vs_rqvae/semantic/hitrate") == (pytest.approx([0.25]))
