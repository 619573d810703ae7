"""Attack tests (brief attack16) against the block host's encode-once reply path."""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_blockhost import Host  # noqa: E402


class HiddenCycleTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        os.makedirs(os.path.join(self.dir.name, "blocks"))
        self.host = Host(self.dir.name)

    def tearDown(self):
        try:
            self.host.close()
        except Exception:
            pass
        self.dir.cleanup()

    def test_finding1_self_referencing_dict_subclass_is_invalid_result_not_a_crashed_worker(self):
        # A dict subclass whose values() hides its children passes _unreadable's depth bound; the
        # encoder built by rumi_wire._strict_encoder has no cycle check (markers=None), so with a
        # raised recursion limit it recurses until the C stack overflows: the worker dies with
        # SIGSEGV and no reply frame. Before 9ece720 (json.dumps, check_circular) this was
        # "Circular reference detected" -> invalid_result.
        with open(os.path.join(self.dir.name, "blocks", "cyc.py"), "w") as f:
            f.write(
                "import sys\n"
                "class D(dict):\n"
                "    def values(self):\n"
                "        return []\n"
                "def run(i, c=None):\n"
                "    sys.setrecursionlimit(10 ** 7)\n"
                "    x = D()\n"
                "    x['a'] = x\n"
                "    return x\n"
            )
        try:
            r = self.host.call("blocks/cyc.py")
        except Exception as exc:  # no frame: the worker died
            self.host.p.wait(5)
            self.fail(f"no reply ({exc!r}); worker exit code {self.host.p.returncode}")
        self.assertEqual((r["ok"], r.get("error_type")), (False, "invalid_result"), r)
        self.assertTrue(self.host.send({"id": 99, "op": "ping"})["ok"])


if __name__ == "__main__":
    unittest.main()
