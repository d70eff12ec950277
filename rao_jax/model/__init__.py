"""The decoder (Gemma 1/2/3, Qwen3), its sharding, checkpoints, tokenizers."""

from rao_jax.model.config import GLOBAL
from rao_jax.model.config import LOCAL
from rao_jax.model.config import ModelConfig
from rao_jax.model.gemma import Cache
from rao_jax.model.gemma import init_cache
from rao_jax.model.gemma import LayerCache
from rao_jax.model.gemma import Transformer
from rao_jax.model.hf_io import CheckpointError
from rao_jax.model.hf_io import config_from_hf
from rao_jax.model.hf_io import config_to_hf
from rao_jax.model.hf_io import load_hf
from rao_jax.model.hf_io import save_hf
from rao_jax.model.params import abstract_model
from rao_jax.model.params import check_shardable
from rao_jax.model.params import create_model
from rao_jax.model.sharding import DEFAULT_RULES
from rao_jax.model.sharding import make_mesh
from rao_jax.model.sharding import use_mesh
from rao_jax.model.tokenizer import ByteTokenizer
from rao_jax.model.tokenizer import HFTokenizer
from rao_jax.model.tokenizer import load_tokenizer
from rao_jax.model.tokenizer import Tokenizer
