"""Authorisation decisions. Pure: directory objects and the clock in, a decision out."""

from garrison.policy.decide import Decision, decide

__all__ = ["Decision", "decide"]
