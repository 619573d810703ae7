"""Counts words and the most frequent ones."""

from collections import Counter


def run(input_data):
    words = [w.strip(".,;:!?\"'()") for w in str(input_data.get("text") or "").split()]
    words = [w for w in words if w]
    top = Counter(w.lower() for w in words).most_common(int(input_data.get("top") or 3))
    return {"words": len(words), "top": [{"word": w, "count": c} for w, c in top]}
