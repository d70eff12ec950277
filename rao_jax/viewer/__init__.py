"""The call-tree viewer: a run's saved trees in a terminal or a web page.

`python -m rao_jax.viewer` is its entry point (docs/viewer.md).
"""

from rao_jax.viewer import console
from rao_jax.viewer import html
from rao_jax.viewer import run_files
from rao_jax.viewer.console import format_files
from rao_jax.viewer.console import format_tree
from rao_jax.viewer.console import format_turns
from rao_jax.viewer.html import render_page
from rao_jax.viewer.run_files import TreeFile
from rao_jax.viewer.run_files import list_tree_files
from rao_jax.viewer.run_files import read_trees
