"""A generic sharded trainer: one jitted, donated train step over a device mesh.

Any model plugs in as a `TrainTask` (init + loss). The trainer owns everything
else: parameter and optimizer-state shardings from the logical-axis rules, the
optimizer, checkpoints and resume, metrics, evaluation hooks and preemption.

Checkpoint decision order at start-up (documented, and tested):
  1. a finished checkpoint in `<workdir>/checkpoints` -> resume it (step, params,
     optimizer state, model state); the run continues where it stopped;
  2. else `init_checkpoint` is given -> take its params (and model state) and start
     at step 0 with a fresh optimizer (how each SFT stage starts from the previous);
  3. else initialise from `task.init`.

Nothing non-finite is ever committed: with `check_finite` the params, optimizer state
and model state are checked before every save (periodic, preemption and final); a NaN
or Inf stops the run with errors.NonFiniteError naming the last finite checkpoint,
which is the one a rerun resumes. A checkpoint found non-finite at resume (written by
an older version) is deleted and an earlier, finite one resumed.

Input is a step-indexed batch function `batch_fn(step) -> dict of numpy arrays`,
so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import flax
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from gr_jax import errors
from gr_jax.train import checkpoints, metric_writers, optim, partitioning

Batch = dict[str, np.ndarray]


class TrainTask(Protocol):
  """What a model must provide to be trained."""

  def init(self, rng: jax.Array, batch: Batch) -> dict:
    """Flax variables {'params': ..., other collections}; params may be logically boxed."""

  def loss(
    self, variables: dict, batch: dict[str, jax.Array], rng: jax.Array
  ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict]]:
    """(scalar loss, (scalar metrics, updated non-'params' collections))."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any


class NonFiniteLossError(errors.NonFiniteError, FloatingPointError):
  """The loss, parameters or optimizer state became NaN or Inf; nothing non-finite is saved."""


@gin.configurable
@dataclasses.dataclass
class TrainerConfig:
  """Knobs of a training run.

  Attributes:
    num_steps: total optimizer steps of the run.
    log_every: steps between console / TensorBoard measurements.
    checkpoint_every: steps between checkpoints (one is always written at the end).
    eval_every: steps between calls of the eval hook (0 = only at the end).
    max_to_keep: checkpoints kept.
    async_checkpoint: write checkpoints in the background.
    seed: initialisation and per-step rng seed.
    init_checkpoint: checkpoint directory of another run to start from (decision 2).
    progress_bar: show a tqdm bar (on process 0, when stderr is a terminal).
    check_finite: stop with an error when the loss (checked at log steps) or the
      params / optimizer state (checked before every save) are NaN/Inf.
    profile_steps: (first, stop): a jax.profiler trace of steps first .. stop - 1,
      written under the run's tb/ folder (TensorBoard's Profile tab); None: no trace.
  """

  num_steps: int = 1000
  log_every: int = 50
  checkpoint_every: int = 500
  eval_every: int = 0
  max_to_keep: int = 3
  async_checkpoint: bool = True
  seed: int = 0
  init_checkpoint: str | None = None
  progress_bar: bool = True
  check_finite: bool = True
  profile_steps: tuple[int, ...] | None = None

  def __post_init__(self):
    steps = self.profile_steps
    if steps is not None and (len(steps) != 2 or not 0 <= steps[0] < steps[1]):
      raise ValueError(
        f"TrainerConfig.profile_steps must be (first, stop) with 0 <= first < stop, got {steps}"
      )

  def settings(self) -> dict:
    """The fields that change a run's result (for the stage record); not logging knobs."""
    return {"num_steps": self.num_steps, "seed": self.seed}


@dataclasses.dataclass
class FitResult:
  state: TrainState
  last_metrics: dict[str, float]
  preempted: bool
  resumed_from: int | None


class _SigtermFlag:
  """Turns SIGTERM into a flag the train loop polls, so it can save and exit.

  With several processes, a SIGTERM may reach only some of them, and they must all
  stop after the same step: then JAX's preemption service (started by
  jax.distributed.initialize, it listens for SIGTERM on every process) picks the step,
  and this class leaves the signal to it.
  """

  def __init__(self):
    self.raised = False
    self._previous = None
    self._installed = False
    self._multi_process = jax.process_count() > 1

  def __enter__(self):
    if self._multi_process or self._installed:  # re-entering keeps the first install
      return self
    self._installed = True
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: preemption handling is the caller's.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def should_stop(self, step: int) -> bool:
    """True once a preemption was signalled; every process must call it every step."""
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.raised

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    self._installed = False


class Trainer:
  """Trains a `TrainTask` on a mesh; see the module docstring for the lifecycle."""

  def __init__(
    self,
    task: TrainTask,
    workdir: str,
    *,
    config: TrainerConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: partitioning.LogicalRules | None = None,
    optimizer: optax.GradientTransformation | None = None,
    schedule: optax.Schedule | None = None,
  ):
    self.task = task
    self.workdir = workdir
    self.config = config or TrainerConfig()
    self.mesh = mesh if mesh is not None else partitioning.make_mesh()
    self.rules = tuple(rules) if rules is not None else partitioning.logical_rules()
    if schedule is None:
      schedule = optim.make_schedule(total_steps=self.config.num_steps)
    self.schedule = schedule
    self.optimizer = optimizer or optim.make_optimizer(schedule)
    self._batch_sharding = partitioning.batch_sharding(self.mesh, self.rules)
    self._replicated = partitioning.replicated(self.mesh)
    self._state_sharding = None
    self._train_step = None

  # ---------------------------------------------------------------- sharding
  def _abstract_state(self, sample_batch: Batch):
    """Abstract (unboxed) train state and its NamedShardings, from the logical boxes."""

    def create(rng):
      variables = self.task.init(rng, sample_batch)
      params = variables["params"]
      model_state = {k: v for k, v in variables.items() if k != "params"}
      # The optimizer state mirrors the param boxes, so it inherits their axes.
      return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=self.optimizer.init(params),
        model_state=model_state,
      )

    boxed = jax.eval_shape(create, jax.random.key(0))
    specs = nn.get_partition_spec(boxed)
    shardings = partitioning.logical_to_sharding(specs, self.mesh, self.rules)
    return create, shardings

  def state_sharding(self, sample_batch: Batch):
    if self._state_sharding is None:
      self._create_fn, self._state_sharding = self._abstract_state(sample_batch)
    return self._state_sharding

  def put_batch(self, batch: Batch) -> dict[str, jax.Array]:
    """Host batch -> device arrays sharded over the batch axis (explicit transfer).

    Every process holds the same global batch (batch_fn is a pure function of the
    step) and transfers only the rows of its own devices, so this works with one
    process or many.
    """
    return jax.tree.map(lambda x: _host_to_global(x, self._batch_sharding), batch)

  # ------------------------------------------------------------------- init
  def init_state(self, sample_batch: Batch) -> tuple[TrainState, int | None]:
    """Applies the decision order of the module docstring; returns (state, resumed step)."""
    shardings = self.state_sharding(sample_batch)
    create = self._create_fn
    init_fn = jax.jit(
      lambda rng: nn.meta.unbox(create(rng)),
      out_shardings=shardings,
    )
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      abstract = jax.eval_shape(init_fn, jax.random.key(self.config.seed))
    abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    for step in sorted(self.checkpointer.all_steps(), reverse=True):
      logging.info("resuming from %s step %d", self.checkpointer.directory, step)
      restored = self.checkpointer.restore(step, abstract)
      if not self.config.check_finite or self._is_finite(restored):
        return restored, step
      # Never resume (or keep as latest) a poisoned state: drop it, try the one before.
      logging.warning("checkpoint step %d holds NaN/Inf values; deleted", step)
      self.checkpointer.delete(step)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      state = init_fn(jax.random.key(self.config.seed))
    if self.config.init_checkpoint:
      loaded, step = checkpoints.restore_params(self.config.init_checkpoint)
      logging.info("initialising params from %s step %d", self.config.init_checkpoint, step)
      params = _put_like(loaded["params"], abstract.params, "params", self.config.init_checkpoint)
      model_state = state.model_state
      if loaded["model_state"]:
        model_state = _put_like(
          loaded["model_state"], abstract.model_state, "model_state", self.config.init_checkpoint
        )
      state = state.replace(params=params, model_state=model_state)
    return state, None

  # ------------------------------------------------------------------- step
  def _make_train_step(self, state_sharding):
    task, optimizer, schedule = self.task, self.optimizer, self.schedule

    def train_step(state: TrainState, batch, base_rng):
      rng = jax.random.fold_in(base_rng, state.step)

      def loss_fn(params):
        variables = {"params": params, **state.model_state}
        return task.loss(variables, batch, rng)

      (loss, (metrics, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
      )
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      new_state = TrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        model_state={**state.model_state, **new_model_state},
      )
      metrics = {
        **metrics,
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "learning_rate": schedule(state.step),
      }
      return new_state, metrics

    return jax.jit(
      train_step,
      in_shardings=(state_sharding, self._batch_sharding, self._replicated),
      out_shardings=(state_sharding, self._replicated),
      donate_argnums=(0,),
    )

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    if self._train_step is None:
      self._train_step = self._make_train_step(self._state_sharding)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return self._train_step(state, batch, rng)

  # ------------------------------------------------------------------ finite
  def _is_finite(self, state: TrainState) -> bool:
    """Whether every float leaf of params, optimizer state and model state is finite."""
    if not hasattr(self, "_finite_fn"):

      def all_finite(tree):
        leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [True]))

      self._finite_fn = jax.jit(all_finite, out_shardings=self._replicated)
    tree = (state.params, state.opt_state, state.model_state)
    with jax.set_mesh(self.mesh):
      return bool(jax.device_get(self._finite_fn(tree)))

  def _non_finite(self, step: int, what: str) -> errors.NonFiniteError:
    """The error for a non-finite `what` at `step`, naming the last finite checkpoint."""
    self.checkpointer.wait()
    last = self.checkpointer.latest_step()
    resume = (
      f"the last finite checkpoint is step {last}, which a rerun resumes"
      if last is not None
      else "no checkpoint was saved; a rerun starts afresh"
    )
    return NonFiniteLossError(
      f"training diverged: {what} became NaN/Inf at step {step}; nothing non-finite was saved "
      f"to {self.checkpointer.directory}: {resume} (lower the learning rate or check the data)"
    )

  def _save(self, step: int, state: TrainState, *, force: bool = False) -> None:
    """Saves `state` only when it is finite (see the module docstring)."""
    if self.config.check_finite and not self._is_finite(state):
      raise self._non_finite(step, "the parameters or optimizer state")
    self.checkpointer.save(step, state, force=force)

  # ------------------------------------------------------------------- loop
  @property
  def checkpointer(self) -> checkpoints.Checkpointer:
    if not hasattr(self, "_checkpointer"):
      self._checkpointer = checkpoints.Checkpointer(
        os.path.join(self.workdir, "checkpoints"),
        max_to_keep=self.config.max_to_keep,
        async_save=self.config.async_checkpoint,
      )
    return self._checkpointer

  def fit(
    self,
    batch_fn: Callable[[int], Batch],
    *,
    eval_fn: Callable[[TrainState, int], dict[str, float]] | None = None,
    writer: metric_writers.MetricWriter | None = None,
    prepare_batch: Callable[[TrainState, dict, int], dict] | None = None,
    should_stop: Callable[[int], bool] | None = None,
  ) -> FitResult:
    """Trains to `config.num_steps`, resuming when a checkpoint exists.

    Args:
      batch_fn: step -> host batch (dict of numpy arrays, leading global batch axis).
      eval_fn: (state, step) -> scalar metrics; called every `eval_every` steps and at
        the end.
      writer: where measurements go; default: console + TensorBoard in workdir/tb.
      prepare_batch: (state, device batch, step) -> device batch, run before each
        update with the current state (e.g. an RL rollout from the current policy).
      should_stop: step -> True to end the run after that step's evaluation (early
        stopping); asked after each periodic evaluation. The run then ends as a
        finished one: final checkpoint and final evaluation.

    Returns:
      FitResult with the final state; `preempted` is True when SIGTERM stopped the
      run after saving a checkpoint.

    Raises:
      NonFiniteLossError: (an errors.NonFiniteError) the loss, params or optimizer state
        became NaN/Inf; the message names the last finite checkpoint.
    """
    cfg = self.config
    own_writer = writer is None
    writer = writer or metric_writers.MetricWriter(os.path.join(self.workdir, "tb"))
    # The SIGTERM handler goes in before set-up, so a preemption during a slow
    # start is honoured at the first step instead of killing the process.
    sigterm = _SigtermFlag().__enter__()
    # Set-up may copy host values freely; the transfer guard is for the step loop.
    try:
      with jax.transfer_guard("allow"):
        state, resumed = self.init_state(batch_fn(0))
        # Made on device: a host key cannot be put on devices of other processes.
        base_rng = jax.jit(lambda: jax.random.key(cfg.seed + 1), out_shardings=self._replicated)()
    except BaseException:
      sigterm.__exit__(None, None, None)
      raise
    start = int(jax.device_get(state.step))
    last_metrics: dict[str, float] = {}
    preempted = False
    last_eval: tuple[int, dict[str, float]] | None = None  # (step, metrics) of the latest eval
    progress = _progress_bar(start, cfg.num_steps, cfg.progress_bar)
    writer.write_gin_config(start)
    writer.write_hparams(
      {**metric_writers.gin_hparams(), **{f"TrainerConfig.{k}": v for k, v in vars(cfg).items()}},
      metrics=("train/loss",),
    )
    profiler = _StepProfiler(cfg.profile_steps, os.path.join(self.workdir, "tb"))
    window_start, window_examples, window_steps = time.perf_counter(), 0, 0
    try:
      with sigterm:
        step = start
        while step < cfg.num_steps:
          profiler.before_step(step)
          host_batch = batch_fn(step)
          device_batch = self.put_batch(host_batch)
          if prepare_batch is not None:
            with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
              device_batch = prepare_batch(state, device_batch, step)
          state, metrics = self.train_step(state, device_batch, base_rng)
          step += 1
          profiler.after_step(step, state)
          window_examples += len(next(iter(host_batch.values())))
          window_steps += 1
          if progress is not None:
            progress.update(1)
          if step % cfg.log_every == 0 or step == cfg.num_steps:
            last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            elapsed = time.perf_counter() - window_start
            last_metrics["examples_per_s"] = window_examples / max(elapsed, 1e-9)
            last_metrics["step_time_s"] = elapsed / max(window_steps, 1)
            window_start, window_examples, window_steps = time.perf_counter(), 0, 0
            if cfg.check_finite and not np.isfinite(last_metrics["loss"]):
              raise self._non_finite(step, "the loss")
            writer.write_scalars(step, last_metrics)
            if progress is not None:
              progress.set_postfix(loss=f"{last_metrics['loss']:.4g}")
          if step % cfg.checkpoint_every == 0 and step < cfg.num_steps:
            self._save(step, state)
          if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
            last_eval = (step, eval_fn(state, step))
            writer.write_scalars(step, last_eval[1], prefix="eval")
            if should_stop is not None and should_stop(step):
              logging.info("stopping early at step %d", step)
              break
          if sigterm.should_stop(step):
            logging.warning("SIGTERM: saving step %d and stopping; rerun to resume", step)
            # The signal may arrive during a periodic save of this very step.
            if self.checkpointer.latest_step() != step:
              self._save(step, state, force=True)
            preempted = True
            break
        if not preempted:
          if self.checkpointer.latest_step() != step:  # a resumed, finished run has it
            self._save(step, state, force=True)
          if eval_fn is not None:
            if last_eval is not None and last_eval[0] == step:  # this step is evaluated
              eval_metrics = last_eval[1]
            else:
              eval_metrics = eval_fn(state, step)
              writer.write_scalars(step, eval_metrics, prefix="eval")
            last_metrics.update({f"eval/{k}": v for k, v in eval_metrics.items()})
      self.checkpointer.wait()
    finally:
      profiler.stop()
      if progress is not None:
        progress.close()
      writer.flush()
      if own_writer:
        writer.close()
    return FitResult(state, last_metrics, preempted, resumed)

  def close(self) -> None:
    if hasattr(self, "_checkpointer"):
      self._checkpointer.close()


def _put_like(tree, abstract, what: str, source: str):
  """Host tree -> device arrays with the shardings of `abstract`; checks structure."""
  try:
    return jax.tree.map(
      lambda x, a: _host_to_global(np.asarray(x, dtype=a.dtype).reshape(a.shape), a.sharding),
      tree,
      abstract,
    )
  except (ValueError, TypeError) as e:
    raise ValueError(f"init checkpoint {source}: {what} do not match this model: {e}") from e


def _host_to_global(value: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array every process holds in full -> a global array with `sharding`.

  Each process copies only the shards of its addressable devices, each with an
  explicit `device_put` (so the transfer guard lets it through). One process owning
  every device takes the faster single `device_put`.
  """
  value = np.asarray(value)
  if sharding.is_fully_addressable:
    return jax.device_put(value, sharding)
  shards = [
    jax.device_put(value[index], device)
    for device, index in sharding.addressable_devices_indices_map(value.shape).items()
  ]
  return jax.make_array_from_single_device_arrays(value.shape, sharding, shards)


class _StepProfiler:
  """A jax.profiler trace of the steps in [first, stop) (none when `steps` is None)."""

  def __init__(self, steps: tuple[int, ...] | None, logdir: str):
    self._first, self._stop = steps if steps is not None else (-1, -1)
    self._logdir = logdir
    self._tracing = False

  def before_step(self, step: int) -> None:
    if step == self._first:
      jax.profiler.start_trace(self._logdir)
      self._tracing = True
      logging.info("profiling steps %d to %d into %s", self._first, self._stop - 1, self._logdir)

  def after_step(self, step: int, state) -> None:
    if self._tracing and step == self._stop:
      jax.block_until_ready(state)  # the trace holds the last step's device work
      self.stop()

  def stop(self) -> None:
    if self._tracing:
      jax.profiler.stop_trace()
      self._tracing = False


def _progress_bar(start: int, total: int, enabled: bool):
  if not metric_writers.show_progress(enabled):
    return None
  from tqdm import tqdm

  return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, mininterval=2.0)
