"""The layer both sides share: wire vocabulary, call modes, ids, context, settings, runtime.

Never imports ``mesh.client`` or ``mesh.server``.
"""
