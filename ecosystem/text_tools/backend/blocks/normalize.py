"""Collapses whitespace and optionally lower-cases the text."""


def run(input_data, context=None):
    text = " ".join(str(input_data.get("text") or "").split())
    if input_data.get("lower"):
        text = text.lower()
    print(f"normalised {len(text)} characters")  # goes to the run log, never the result
    return {"text": text}
