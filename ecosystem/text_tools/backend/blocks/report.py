"""Builds a one-line report; aborts the flow when there is nothing to report."""


def run(input_data, context=None):
    counts = input_data.get("counts") or {}
    if not counts.get("words"):
        return {"__flow_control": "abort", "reason": "the text is empty"}
    top = ", ".join(f"{t['word']}×{t['count']}" for t in counts.get("top", []))
    return {"line": f"{counts['words']} words in flow {context['flow_id']}; most frequent: {top}"}
