"""The instructable reward model as an HTTP service (``salmon serve``): see :mod:`salmon_dag.serve.app`."""

from salmon_dag.serve.app import TOKEN_ENV, BadRequest, Model, ServeLimits, create_app, split_query

__all__ = ["TOKEN_ENV", "BadRequest", "Model", "ServeLimits", "create_app", "split_query"]
