"""Remote functions: .remote() returns the value, .spawn() a handle, .map() runs in
parallel and keeps order; calling the function runs it here.

    python examples/functions.py
"""

import sandrun

app = sandrun.App("examples")


@app.function(cpus=1, memory="512MB", timeout="5m", retries=1)
def square(x: int) -> int:
    return x * x


@app.function()
def divide(a: float, b: float) -> float:
    return a / b


if __name__ == "__main__":
    print("local:", square(4))
    print("remote:", square.remote(4))

    call = square.spawn(5)  # returns at once
    print("spawned", call.id, "->", call.get(timeout=120))

    print("map:", list(square.map(range(10))))

    try:
        divide.remote(1, 0)
    except ZeroDivisionError as exc:  # the remote exception, with its traceback attached
        print("remote raised:", repr(exc))
