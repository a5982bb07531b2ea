"""The layer both sides share; never imports ``mesh.client`` or ``mesh.server``.

- ``wire``: op names, error kinds, ``err`` entry builders, ``PY_VERSION`` (the ops table in its docstring);
- ``methods``: call modes (SYNC / ASYNC / ASYNC_MSG), ``method_table``, ``is_rpc_class``;
- ``ids``: fork-safe ids for chains, tasks and holder refs;
- ``context``: the per-thread call chain and the ``blocking()`` hooks;
- ``settings``: the client's ``Settings`` (``mesh.init``), the only client-side reader of ``MESH_*``;
- ``options``: ``ServerOptions`` (the server's, validated, to argv / from args), ``check_host``;
- ``address``: ``normalize_address`` (one IPv6 bracket rule), ``is_loopback``, ``check_resolves``;
- ``runtime``: the one process-global (settings, Node, session, pid, in-process producers);
- ``redis_results``: Redis result keys, the signed blob format, ``fetch``;
- ``hosted``: the objects this process's servers host, so that ``self`` travels as a reference.
"""
