"""Checked by mypy in tests/test_typing.py: tasks keep their functions' signatures."""

from celeriac import App, AsyncResult

app = App("tcp://127.0.0.1:8786")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(retries=3, queue="emails")
def send_welcome(user_id: int) -> str:
    return f"welcome {user_id}"


ok_add: AsyncResult[int] = add.delay(1, 2)
ok_send: AsyncResult[str] = send_welcome.delay(42)
local: int = add(1, 2)

bad_type = add.delay("one", 2)  # E: wrong argument type
bad_arity = send_welcome.delay()  # E: missing argument
bad_result: AsyncResult[int] = send_welcome.delay(1)  # E: AsyncResult[str] is not AsyncResult[int]
