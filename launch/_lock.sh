# Sourced by _venv.sh and slurm.sh: the lock file that installs each accelerator.
# GR_JAX_ACCELERATOR: cpu (default), cuda12 (NVIDIA GPUs, CUDA 12) or tpu (Cloud TPU VMs).

# Prints the lock file (relative to the repository root) for accelerator $1; an unknown
# one is an error naming $2 (the setting it came from, default GR_JAX_ACCELERATOR).
lock_for_accelerator() {
  case "$1" in
    cpu) echo requirements.lock ;;
    cuda12) echo requirements-cuda12.lock ;;
    tpu) echo requirements-tpu.lock ;;
    *)
      echo "error: ${2:-GR_JAX_ACCELERATOR}='$1' is not one of cpu, cuda12, tpu" >&2
      return 2
      ;;
  esac
}
