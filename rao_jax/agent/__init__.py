"""Recursive agents: the delegation protocol, call trees and the scheduler."""

from rao_jax.agent import env
from rao_jax.agent import protocol
from rao_jax.agent.env import Environment
from rao_jax.agent.env import NodeSpec
from rao_jax.agent.env import ScriptedPolicy
from rao_jax.agent.env import StepView
from rao_jax.agent.env import Tool
from rao_jax.agent.env import ToolResult
from rao_jax.agent.protocol import SPECIAL_TOKENS
from rao_jax.agent.protocol import STOP_TAGS
