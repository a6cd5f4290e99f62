"""TensorFlow stays off the accelerators and out of the jobs that read no TF data."""

import subprocess
import textwrap

from conftest import PYTHON, REPO_ROOT, python_env

TF_MODULES = ("tensorflow", "seqio", "tensorflow_datasets")


def _run(code: str) -> str:
  result = subprocess.run(
    [PYTHON, "-c", textwrap.dedent(code)],
    cwd=REPO_ROOT,
    env=python_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()[-1]


def test_jobs_serving_and_prompts_load_no_tensorflow(tmp_path):
  # Every job registered (as the entry point does), the server, and a prompt built the way
  # evaluation, RL and serving build them: none of it may load TensorFlow.
  loaded = _run(
    f"""
    import sys
    import gr_jax.main
    from gr_jax import gin_utils
    from gr_jax.data import seqio_tasks
    from gr_jax.data.text import vocab as text_vocab
    from gr_jax.models.token_layout import TokenLayout
    from gr_jax.serving import export, request, server, service

    gin_utils._import_jobs()
    texts = [f"red shoe {{i}} blue ink lamp desk" for i in range(200)]
    path = text_vocab.train_text_vocab(texts, {str(tmp_path / "t.model")!r}, vocab_size=40)
    vocab = text_vocab.TextVocab.load(path)
    layout = TokenLayout(text_vocab_size=vocab.vocab_size, sid_level_sizes=(8, 4))
    assert len(seqio_tasks.TextEncoder(vocab, layout)("red shoe")) > 0
    print([m for m in {TF_MODULES!r} if m in sys.modules])
    """
  )
  assert loaded == "[]"


def test_tensorflow_through_the_guard_sees_only_the_cpu():
  visible = _run(
    """
    from gr_jax import tf_guard
    tf_guard.seqio()
    tf = tf_guard.tensorflow()
    assert tf_guard.tfds().core is not None
    tf.constant(1.0) + 1.0  # initializes TensorFlow's devices
    print(sorted({d.device_type for d in tf.config.get_visible_devices()}))
    """
  )
  assert visible == "['CPU']"
