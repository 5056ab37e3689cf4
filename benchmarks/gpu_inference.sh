cd "$(dirname "$0")/.." && { ls .wheels/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps .wheels/*.whl; true; } && python3 benchmarks/gpu_inference.py "$@"
