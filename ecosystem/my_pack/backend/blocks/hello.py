"""The Pack guide's hello block."""


def run(input_data, context=None):
    name = (input_data or {}).get("name") or "World"
    return {"message": f"Hello, {name}!"}
