"""mypy plugin: the ``to_dist=`` constructor keyword of ``RpcMeta`` classes (``plugins = mesh.mypy_plugin``).

``RpcMeta.__call__`` takes ``to_dist=`` before the class's own ``__init__`` sees the arguments;
mypy checks a constructor call against ``__init__`` only, so ``WebAgent("W0", to_dist=True)``
would be refused when ``__init__`` has no ``**kwargs``. This adds the keyword to the constructor
signature of every class whose metaclass is ``RpcMeta``. Never imported by the mesh itself.
"""

from __future__ import annotations

from typing import Callable

from mypy.nodes import ARG_NAMED_OPT, ARG_STAR2, TypeInfo
from mypy.plugin import FunctionSigContext, Plugin
from mypy.types import AnyType, FunctionLike, TypeOfAny

_META = "mesh._rpc.RpcMeta"


class _MeshPlugin(Plugin):
    def get_function_signature_hook(self, fullname: str) -> Callable[[FunctionSigContext], FunctionLike] | None:
        sym = self.lookup_fully_qualified(fullname)
        node = sym.node if sym is not None else None
        if isinstance(node, TypeInfo) and any(
            m.type.fullname == _META for m in ([node.metaclass_type] if node.metaclass_type else [])
        ):
            return _with_to_dist
        return None


def _with_to_dist(ctx: FunctionSigContext) -> FunctionLike:
    sig = ctx.default_signature
    if "to_dist" in sig.arg_names:
        return sig
    at = sig.arg_kinds.index(ARG_STAR2) if ARG_STAR2 in sig.arg_kinds else len(sig.arg_kinds)
    return sig.copy_modified(
        arg_types=[*sig.arg_types[:at], AnyType(TypeOfAny.explicit), *sig.arg_types[at:]],
        arg_kinds=[*sig.arg_kinds[:at], ARG_NAMED_OPT, *sig.arg_kinds[at:]],
        arg_names=[*sig.arg_names[:at], "to_dist", *sig.arg_names[at:]],
    )


def plugin(version: str) -> type[Plugin]:
    return _MeshPlugin
