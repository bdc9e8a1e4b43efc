"""Authorisation decisions. Pure: directory objects and the clock in, a decision out.

The decision engine is ``garrison.policy.engine`` (Cedar); ``reference`` is the plain-Python
model it is checked against.
"""
