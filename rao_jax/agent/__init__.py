"""Recursive agents: the delegation protocol, call trees and the scheduler."""
