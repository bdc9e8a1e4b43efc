"""The HTTP edge both planes share, below both: request ids, the client's address (trusted
proxy aware), the presented key, reading a bounded body, the one admission step
(authenticate → locks) and the narrow view of the process the admin plane reads.

The data plane (``garrison.gateway``) and the admin plane (``garrison.admin``) each import
this package and never each other; ``garrison.server`` composes them. Nothing here imports
either plane. The face re-exports nothing: import the module you need.
"""
