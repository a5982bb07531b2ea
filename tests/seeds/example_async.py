# The `Example` class of AgentScope's developer guide, run on mesh.
# Changed lines: the import, and the sleeps (1 s -> 0.3 s).
import time
from mesh import RpcMeta, async_func   # was: from agentscope.rpc import RpcMeta, async_func


class Example(metaclass=RpcMeta):

    # @sync_func  # 默认即为 sync_func，可以不添加
    def sync_method(self) -> str:
        # 同步方法，调用者会被阻塞 1 s
        time.sleep(0.3)
        return "sync"

    @async_func
    def async_method_basic(self) -> str:
        # 异步方法，调用者不会被阻塞，可以继续执行直到尝试获取结果
        time.sleep(0.3)
        # 返回一个基本类型
        return "async"

    @async_func
    def async_method_composite(self) -> dict:
        # 异步方法
        time.sleep(0.3)
        # 返回一个字典
        return {"a": 1, "b": 2, "c": "hello world",}

    def _protected_method(self) -> str:
        # 不是公有方法，rpc object 无法调用该方法
        time.sleep(0.3)
        return "protected"


if __name__ == "__main__":
    example = Example(to_dist=True)
    # 访问 protected 方法会引发未定义行为，请避免使用
    # protected_result = example._protected_method()
    t1 = time.time()
    sync_result = example.sync_method()
    assert sync_result == "sync"
    t2 = time.time()
    print(f"Sync func cost: {t2 - t1} s")
    t3 = time.time()
    async_basic = example.async_method_basic()
    async_composite = example.async_method_composite()
    t4 = time.time()
    print(f"Async func cost: {t4 - t3} s")
    # 基本类型需要在返回值上调用 result 方法获取异步执行结果
    assert async_basic.result() == "async"
    # 复合类型在访问所需要的域时自动更新异步执行结果
    assert async_composite["a"] == 1
    assert async_composite["b"] == 2
    assert async_composite["c"] == "hello world"
    print("ok")
