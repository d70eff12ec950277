"""Recursive agents: the delegation protocol, call trees and the scheduler."""

from rao_jax.agent import engine
from rao_jax.agent import env
from rao_jax.agent import model_engine
from rao_jax.agent import protocol
from rao_jax.agent import scheduler
from rao_jax.agent import scripted_engine
from rao_jax.agent import tree
from rao_jax.agent.engine import DecodeResult
from rao_jax.agent.engine import Engine
from rao_jax.agent.engine import StepOutput
from rao_jax.agent.engine import StepRequest
from rao_jax.agent.env import Environment
from rao_jax.agent.env import NodeSpec
from rao_jax.agent.env import ScriptedPolicy
from rao_jax.agent.env import StepView
from rao_jax.agent.env import Tool
from rao_jax.agent.env import ToolResult
from rao_jax.agent.model_engine import ModelEngine
from rao_jax.agent.protocol import SPECIAL_TOKENS
from rao_jax.agent.protocol import STOP_TAGS
from rao_jax.agent.scheduler import Budgets
from rao_jax.agent.scheduler import FrontierScheduler
from rao_jax.agent.scheduler import RolloutStats
from rao_jax.agent.scripted_engine import ScriptedEngine
from rao_jax.agent.tree import Node
from rao_jax.agent.tree import Tree
